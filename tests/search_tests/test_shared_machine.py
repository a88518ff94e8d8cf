"""Faults a user meets on a shared machine: two searches started at one moment, an OUT folder that cannot be
written, and a search's results asked for by the name OUT shows. Real processes, real file systems."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from search import main
from tests.search_tests.processes import LIMIT_S
from tests.search_tests.tiny import tiny_search


def _search(*args: str) -> list[str]:
    return [sys.executable, "-m", "search", *args]


@pytest.mark.slow
def test_two_searches_started_at_one_moment_both_finish_each_with_its_own_dashboard(tiny_eggs, tmp_path):
    drivers = []
    for k in range(2):  # the default dashboard port for both, as two terminals or a shell loop with & give
        log = tmp_path / f"{k}.log"
        argv = _search(*tiny_search(tiny_eggs, tmp_path / f"out{k}", "--no-retrain", trials=1, max_epochs=1))
        drivers.append((subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT), log))
    codes = []
    for process, _ in drivers:
        try:
            codes.append(process.wait(timeout=LIMIT_S))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(None)
    logs = [log.read_text() for _, log in drivers]
    assert codes == [0, 0], "\n\n".join(text[-2000:] for text in logs)
    urls = [re.search(r"Ray dashboard: (http://127\.0\.0\.1:\d+)", text) for text in logs]
    assert all(urls) and urls[0][1] != urls[1][1], "each search shows its own dashboard on loopback"
    for k in range(2):
        trials = pd.read_parquet(tmp_path / f"out{k}" / tiny_eggs.name / "trials.parquet")
        assert len(trials) == 1 and (trials["status"] != "ERROR").all()
    assert not any("Traceback" in text for text in logs)


def _refused(completed: subprocess.CompletedProcess, folder: Path) -> None:
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write in --out {folder}"), lines
    assert "--out" in lines[0].split(";", 1)[1], "the fix names the option"


def test_out_on_a_read_only_file_system_is_refused_in_one_line_before_anything_starts(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    unshare = shutil.which("unshare")
    # a mount namespace of its own: a read-only tmpfs there, seen by this command only
    script = 'mount -t tmpfs -o ro tmpfs "$1" || exit 99; exec "$2" -m search egg --demo --out "$1/runs"'
    if unshare is None:
        pytest.skip("needs util-linux's unshare to mount a read-only file system")
    completed = subprocess.run(
        [unshare, "-rm", "sh", "-c", script, "sh", str(mount), sys.executable], capture_output=True, text=True
    )
    if completed.returncode == 99 or "unshare failed" in completed.stderr:
        pytest.skip(f"this machine lets no process mount a file system: {completed.stderr.strip()[:200]}")
    _refused(completed, mount / "runs")
    assert "Read-only file system" in completed.stderr


def test_out_in_a_folder_this_user_may_not_write_is_refused_in_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    command = _search("egg", "--demo", "--out", str(locked / "runs"))
    home = Path(tempfile.mkdtemp(prefix="home-"))  # the other user's own home, where matplotlib keeps its cache
    if os.geteuid() == 0:  # root writes anywhere: run as nobody, as the user who owns no folder would
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root, needs util-linux's setpriv to run as another user")
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        home.chmod(0o777)
    try:
        env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home / "matplotlib")}
        completed = subprocess.run(command, capture_output=True, text=True, cwd=home, env=env)
    finally:
        locked.chmod(0o755)
        shutil.rmtree(home, ignore_errors=True)
    _refused(completed, locked / "runs")
    assert "Permission denied" in completed.stderr


def test_predict_and_resume_take_the_name_out_shows(ray_cluster, tiny_eggs, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "photos" / "my eggs"
    shutil.copytree(tiny_eggs, folder)
    out = tmp_path / "runs"
    assert main(tiny_search(folder, out, trials=1, max_epochs=1)) == 0
    assert (out / "my eggs" / "model").is_dir()
    monkeypatch.chdir(tmp_path)  # "my eggs" is no folder here: only OUT knows the name
    image = next((folder / "test" / "broken").iterdir())
    capsys.readouterr()
    assert main(["predict", "my eggs", str(image), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(str(image)) and ("broken" in printed and "intact" in printed)
    # --resume by the name: the search's recorded folder, found finished, its result printed, nothing run again
    mtime = (out / "my eggs" / "trials.parquet").stat().st_mtime
    assert main(tiny_search("my eggs", out, "--resume", trials=1, max_epochs=1)) == 0
    captured = capsys.readouterr()
    assert "Best configuration: my eggs" in captured.out and "unknown task" not in captured.err
    assert (out / "my eggs" / "trials.parquet").stat().st_mtime == mtime
    # a name OUT does not hold is still unknown, in one line
    assert main(["predict", "no such task", str(image), "--out", str(out)]) == 2
    assert "unknown task 'no such task'" in capsys.readouterr().err


SIGNALLED = """
import os, signal, sys
from search.command_line.main import StopSignals
number = signal.Signals[sys.argv[1]]
before = signal.getsignal(number)
try:
    with StopSignals() as stops:
        os.kill(os.getpid(), number)
        signal.pause()  # not reached when the handler raised
except KeyboardInterrupt:
    print(stops.exit_code(), stops.reason(), signal.getsignal(number) is before)
"""


@pytest.mark.parametrize("name, code", [("SIGHUP", 129), ("SIGTERM", 143)])
def test_sighup_and_sigterm_stop_the_command_as_ctrl_c_does_with_the_shells_code(name, code):
    # the whole path (tables written, resume command printed) is the kill chain's SIGTERM stage; this is the handler
    # both signals share, with a real signal, in a process of its own (signals reach only a main thread)
    completed = subprocess.run(
        [sys.executable, "-c", SIGNALLED, name], capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert completed.stdout.split() == [str(code), "terminated", f"({name})", "True"], completed.stderr[-2000:]

"""Every file the project writes and reads back, damaged for real (cut short, garbage bytes, a key missing): the
command either heals it with one log line or exits 2 with one line that names the file and the fix. Never a
traceback, never a result computed from the damaged bytes."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import timm
from safetensors.torch import save_file

from datasets import DamagedFile, make_demo_dataset
from search import main
from search.inputs.data import prepare
from search.inputs.lock import LOCK_FILE
from tests.conftest import write_image
from tests.search_tests.tiny import tiny_search


def cut_short(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble(path: Path) -> None:
    """The same size, other bytes: what a bad sector or a half-finished copy over an old file leaves."""
    size = path.stat().st_size
    path.write_bytes(bytes((i * 37 + 11) % 256 for i in range(size)))


def drop_a_key(path: Path) -> None:
    data = json.loads(path.read_text())
    data.pop(next(iter(data)) if isinstance(data, dict) else 0)
    path.write_text(json.dumps(data))


DAMAGES = {"cut short": cut_short, "garbage": garble}


@pytest.fixture(scope="module")
def eggs(tmp_path_factory) -> Path:
    return make_demo_dataset("egg", tmp_path_factory.mktemp("eggs"), per_class={"train": 12, "valid": 6, "test": 6})


@pytest.fixture(scope="module")
def finished(ray_cluster, eggs, tmp_path_factory) -> Path:
    """OUT of a finished, retrained search of ``eggs``."""
    out = tmp_path_factory.mktemp("finished")
    assert main(tiny_search(eggs, out)) == 0
    return out


def _copy(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out, next(p for p in out.iterdir() if (p / "best.json").is_file())


def _exit_2_naming(argv: list[str], path: Path, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(path) in err and "damaged" in err, err
    return err


@pytest.mark.parametrize("damage", [cut_short, garble, drop_a_key], ids=["cut short", "garbage", "key missing"])
def test_damaged_search_state_stops_resume_with_exit_2(finished, eggs, tmp_path, capsys, damage):
    out, task = _copy(finished, tmp_path)
    damage(task / "search.json")
    err = _exit_2_naming(tiny_search(eggs, out, "--resume", "--retrain-again"), task / "search.json", capsys)
    assert "--overwrite" in err


def test_a_definition_missing_a_key_reads_as_another_search(finished, eggs, tmp_path, capsys):
    out, task = _copy(finished, tmp_path)
    state = json.loads((task / "search.json").read_text())
    del state["search"]["max_epochs"]
    (task / "search.json").write_text(json.dumps(state))
    assert main(tiny_search(eggs, out, "--resume", "--retrain-again")) == 2
    assert "--max-epochs: None then, 2 now" in capsys.readouterr().err


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_study_stops_resume_with_exit_2(finished, eggs, tmp_path, capsys, damage):
    out, task = _copy(finished, tmp_path)
    damage(task / "study.db")
    _exit_2_naming(tiny_search(eggs, out, "--resume", "--retrain-again"), task / "study.db", capsys)


def test_a_damaged_best_json_stops_resume_and_report_keeps_the_other_tasks(finished, eggs, tmp_path, capsys, caplog):
    out, task = _copy(finished, tmp_path)
    shutil.copytree(task, out / "other")
    best = json.loads((out / "other" / "best.json").read_text())
    (out / "other" / "best.json").write_text(json.dumps({**best, "task": "other"}))
    cut_short(task / "best.json")
    err = _exit_2_naming(tiny_search(eggs, out, "--resume"), task / "best.json", capsys)
    assert "--retrain-again" in err
    assert main(["report", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| other |" in printed and f"| {task.name} |" not in printed
    assert any(str(task / "best.json") in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


@pytest.mark.parametrize(
    "name, damage",
    [("config.json", garble), ("config.json", drop_a_key), ("labels.json", cut_short), ("weights.safetensors", garble)],
)
def test_predict_with_a_damaged_model_folder_exits_2_naming_the_file(finished, eggs, tmp_path, capsys, name, damage):
    out, task = _copy(finished, tmp_path)
    damage(task / "model" / name)
    image = next((eggs / "test").rglob("*.jpg"))
    err = _exit_2_naming(["predict", str(eggs), str(image), "--out", str(out)], task / "model" / name, capsys)
    assert "--retrain-again" in err


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_weights_file_exits_2_naming_it(eggs, tmp_path, capsys, damage):
    weights = tmp_path / "weights"
    weights.mkdir()
    save_file(timm.create_model("resnet10t").state_dict(), str(weights / "resnet10t.safetensors"))
    damage(weights / "resnet10t.safetensors")
    argv = tiny_search(eggs, tmp_path / "out", "--weights", str(weights), pretrained=None)
    err = _exit_2_naming(argv, weights / "resnet10t.safetensors", capsys)
    assert "replace it with a whole copy" in err


def test_a_damaged_warm_start_table_exits_2_naming_it(finished, eggs, tmp_path, capsys):
    out, task = _copy(finished, tmp_path)
    garble(task / "trials.parquet")
    argv = tiny_search(eggs, tmp_path / "new", "--warm-start", str(task))
    _exit_2_naming(argv, task / "trials.parquet", capsys)


def test_a_damaged_split_file_exits_2_and_a_deleted_one_gives_the_same_split(tmp_path):
    root = tmp_path / "photos"  # DIR/CLASS/*: the project makes the split and keeps it in split.json
    for c, colour in (("cats", (200, 30, 30)), ("dogs", (30, 30, 200))):
        for i in range(10):
            write_image(root / c / f"{i}.png", colour=colour)
    split = tmp_path / "out" / "split.json"
    split.parent.mkdir()
    first = prepare(str(root), None, False, 32, split_file=split)
    kept = json.loads(split.read_text())
    for damage in (cut_short, lambda p: p.write_text(json.dumps({"cats/0.png": "holiday"}))):
        damage(split)
        with pytest.raises(DamagedFile, match=f"{split} is damaged.*delete it"):
            prepare(str(root), None, False, 32, split_file=split)
    split.unlink()
    again = prepare(str(root), None, False, 32, split_file=split)
    assert json.loads(split.read_text()) == kept and again.cache.fingerprint == first.cache.fingerprint


# --- two processes, one task folder ---------------------------------------------------------------------------------


@pytest.mark.slow  # a real driver process
def test_a_second_driver_on_a_busy_task_exits_2_at_once_naming_the_first(eggs, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    args = tiny_search(eggs, out, max_epochs=40)
    first = subprocess.Popen(  # one trial at a time (tiny_search's), no dashboard: this search only holds the lock
        [sys.executable, "-m", "search", *args, "--dashboard-port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end, lock = time.monotonic() + 120, None
        while (lock is None or not lock.read_text()) and time.monotonic() < end:
            time.sleep(0.2)
            lock = next(out.glob(f"*/{LOCK_FILE}"), None)
        assert lock is not None and json.loads(lock.read_text())["pid"] == first.pid
        for extra in ([], ["--resume"], ["--overwrite"], ["--resume", "--retrain-again"]):
            assert main([*args, *extra]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and f"in use by the search of pid {first.pid}" in err, err
        assert first.poll() is None, "the first search runs on"
    finally:
        first.kill()
        first.wait()
    # killed with the lock held: the next driver takes it over and says so (then --resume finds no search yet)
    caplog.set_level(logging.INFO, logger="search.inputs.lock")
    assert main([*args, "--resume"]) == 2
    assert "--resume: no search of" in capsys.readouterr().err
    assert any(f"took over the lock of pid {first.pid}" in r.getMessage() for r in caplog.records)
    assert not lock.exists(), "a driver that ends removes its lock"


# --- a full disk ------------------------------------------------------------------------------------------------


def test_a_full_disk_under_out_exits_1_naming_it_and_what_was_written_stays_readable(
    ray_cluster, eggs, tmp_path, capsys
):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()}); needs root")
    try:
        assert main(tiny_search(eggs, small, "--max-failures", "0")) == 1  # each trial fails at its first save
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith(f"error: the disk is full: {small} (--out) has 0.0 MB free"), last
        written = list(small.glob("*/*.json"))
        assert written, "the search wrote its first files before the disk filled"
        for path in written:
            json.loads(path.read_text())  # each whole: written to a temporary file, then renamed
        for path in small.glob("*/*.parquet"):
            pd.read_parquet(path)
        for study in small.glob("*/study.db"):
            optuna.load_study(study_name="search", storage=f"sqlite:///{study}").get_trials()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)

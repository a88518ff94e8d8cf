"""One search taken through every fault of its driver, as a user meets them: kill -9 before any trial reports, Ctrl-C,
SIGTERM (a scheduler preempting the job; SIGHUP takes the same handler, test_shared_machine.py), kill -9 of the
printed command as a checkpoint appears, kill -9 during the retrain, each followed by --resume. Nothing here imitates
a failure: processes are killed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard
import pandas as pd
import pytest

from search import main
from search.inputs.data import resolve_task
from tests.search_tests.processes import LIMIT_S, cpu_seconds, logged_results, snapshot_statuses, wait_for
from tests.search_tests.tiny import tiny_search

pytestmark = pytest.mark.slow  # real driver processes killed at chosen moments
# the longest file of the suite: under xdist (make test) it starts first, so no worker is left with it alone at the end
LONG = True

TRIALS = 5
STOPS = 4  # the driver stopped before --resume: kill -9, Ctrl-C, SIGTERM, kill -9 as a checkpoint appears


def _command(eggs: Path, out: Path, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "search"),
        *tiny_search(
            eggs,
            out,
            *("--dashboard-port", "0", *extra),  # no dashboard: a few CPU-seconds less per driver
            *("--ensemble", "2", "--tta"),  # the retrain killed is the ensemble's members' too
            trials=TRIALS,
            max_epochs=3,
            concurrency=None,  # two trials at once: kills land with trials running, finished and pending
        ),
    ]


class Driver:
    """``python -m search`` in its own process group, as a terminal runs it."""

    def __init__(self, argv: list[str], log: Path):
        self.log = log
        self.process = subprocess.Popen(
            argv, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, cwd=Path.cwd()
        )

    def output(self) -> str:
        return self.log.read_text()

    def finish(self) -> int:
        try:
            return self.process.wait(timeout=LIMIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            pytest.fail(f"the search did not end; its output:\n{self.output()[-3000:]}")


def _retrain_worker() -> int | None:
    """The Ray worker running a retrain, once it has used a second of CPU (training, not starting up)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"ray::retrain" in (proc / "cmdline").read_bytes() and cpu_seconds(int(proc.name)) > 1.0:
                return int(proc.name)
        except OSError:
            continue
    return None


@pytest.fixture(scope="module")
def interrupted_search(eggs, tmp_path_factory) -> dict:
    """One search taken through every driver fault in turn; each stage's observations, for the tests below."""
    out = tmp_path_factory.mktemp("runs")
    task = resolve_task(str(eggs)).name
    experiment = out / task / "tune" / task
    stages: dict = {"out": out, "task": out / task, "experiment": experiment}

    def finished(count: int):
        def check():
            done = [t for t, s in snapshot_statuses(experiment).items() if s == "TERMINATED"]
            return done if len(done) >= count else None

        return check

    # 0. kill -9 before any trial has reported
    zeroth = Driver(_command(eggs, out), out / "0.log")
    wait_for(lambda: next(experiment.glob("train_trial_*"), None), "a trial to start", process=zeroth.process)
    zeroth.process.send_signal(signal.SIGKILL)
    stages["early_kill"] = {
        "code": zeroth.finish(),
        "reported": [logged_results(t) for t in experiment.glob("train_trial_*")],
    }

    # 1. Ctrl-C (SIGINT to the whole process group, as a terminal sends it) once a trial has finished
    first = Driver(_command(eggs, out, "--resume"), out / "1.log")
    done = wait_for(finished(1), "a finished trial", process=first.process)
    os.killpg(first.process.pid, signal.SIGINT)
    stages["ctrl_c"] = {"code": first.finish(), "output": first.output(), "finished": done}
    stages["ctrl_c"]["trials"] = pd.read_parquet(out / task / "trials.parquet")

    # 1b. SIGTERM to the driver alone, as Kubernetes or Slurm preempt a job, once two trials have finished and this
    # driver's trials report (a signal before Python runs at all ends it as the system's default does)
    def reported() -> int:
        return sum(len(logged_results(t)) for t in experiment.glob("train_trial_*"))

    before = reported()
    term = Driver(_command(eggs, out, "--resume"), out / "1b.log")
    wait_for(lambda: reported() > before or None, "a new epoch", process=term.process)
    wait_for(finished(2), "two finished trials", process=term.process)
    term.process.send_signal(signal.SIGTERM)
    stages["sigterm"] = {"code": term.finish(), "output": term.output()}

    # 2. the printed command, killed with SIGKILL (the driver alone) once three trials have finished, as a trial's
    # next checkpoint appears (trials pending)
    printed = stages["ctrl_c"]["output"].split("to continue: ")[-1].strip()
    argv = shlex.split(printed)
    second = Driver([sys.executable, *argv[1:]], out / "2.log")
    done = wait_for(finished(3), "three finished trials", process=second.process)
    seen = set(experiment.glob("train_trial_*/checkpoint_*"))
    wait_for(lambda: set(experiment.glob("train_trial_*/checkpoint_*")) - seen or None, "a new checkpoint", timeout=60)
    second.process.send_signal(signal.SIGKILL)
    stages["kill"] = {"code": second.finish(), "at": time.time(), "finished": done, "argv": argv}

    # 3. --resume to the end of the search, killed during the retrain
    third = Driver(_command(eggs, out, "--resume"), out / "3.log")
    wait_for(lambda: "retraining trial" in third.output() or None, "the retrain to start", process=third.process)
    wait_for(_retrain_worker, "the retrain's worker to train", process=third.process)
    third.process.send_signal(signal.SIGKILL)
    stages["retrain_kill"] = {"code": third.finish(), "at": time.time(), "best": (out / task / "best.json").exists()}

    # 4. --resume: nothing left to search, the retrain runs again
    resumed = Driver(_command(eggs, out, "--resume"), out / "resumed.log")
    stages["resumed"] = {"code": resumed.finish(), "output": resumed.output()}
    stages["resumed"]["model_mtime"] = (out / task / "model" / "manifest.json").stat().st_mtime

    # 5. --resume once more: nothing to do, so no Ray and no process of its own is needed
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(_command(eggs, out, "--resume")[3:])
    stages["again"] = {"code": code, "output": printed.getvalue()}
    return stages


def test_after_every_kill_and_resume_no_trial_is_lost_or_errored_and_each_epoch_is_recorded_once(interrupted_search):
    early = interrupted_search["early_kill"]
    assert early["code"] == -signal.SIGKILL and not any(early["reported"]), "killed before any trial reported"
    task, experiment = interrupted_search["task"], interrupted_search["experiment"]
    trials = pd.read_parquet(task / "trials.parquet")
    epochs = pd.read_parquet(task / "epochs.parquet")
    assert len(trials) == TRIALS and trials["trial_id"].is_unique
    assert (trials["status"] != "ERROR").all(), trials[["trial_id", "status", "error"]].to_string()
    assert (trials["epochs_run"] >= 1).all(), "every trial trained"
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for trial_id, run in trials.set_index("trial_id")["epochs_run"].items():
        recorded = epochs.loc[epochs["trial_id"] == trial_id, "epoch"].tolist()
        assert recorded == list(range(1, run + 1)), f"{trial_id}: every epoch once in epochs.parquet"
        # Ray Tune's own log: an epoch whose result arrived as the driver stopped, before its checkpoint was
        # registered, runs again after the restore, right after itself; nothing else repeats
        reported = [h["epoch"] for h in logged_results(next(experiment.glob(f"train_trial_{trial_id}_*")))]
        collapsed = [e for i, e in enumerate(reported) if i == 0 or e != reported[i - 1]]
        assert collapsed == list(range(1, run + 1)), f"{trial_id} ran {reported}"
        assert len(reported) - run <= STOPS, f"{trial_id} ran an epoch again more often than the driver stopped"
    assert "re-use actor" not in "".join(p.read_text() for p in interrupted_search["out"].glob("*.log"))


def test_ctrl_c_exits_130_with_the_resume_command_and_the_finished_trials_tables(interrupted_search):
    stage = interrupted_search["ctrl_c"]
    assert stage["code"] == 130, stage["output"][-2000:]
    assert "to continue: python -m search" in stage["output"] and stage["output"].rstrip().endswith("--resume")
    assert "Ray dashboard" not in stage["output"], "--dashboard-port 0 starts none"
    trials = stage["trials"]
    assert set(stage["finished"]) <= set(trials["trial_id"]) and len(trials) < TRIALS
    assert trials["status"].isin(["TERMINATED", "STOPPED", "ERROR"]).all()
    assert (interrupted_search["task"] / "epochs.parquet").is_file()


def test_sigterm_stops_as_ctrl_c_does_with_the_resume_command_and_the_shells_code(interrupted_search):
    outcome = interrupted_search["sigterm"]
    assert outcome["code"] == 143, outcome["output"][-2000:]
    assert "terminated (SIGTERM)" in outcome["output"]
    assert "to continue: python -m search" in outcome["output"] and outcome["output"].rstrip().endswith("--resume")
    assert "received at time" not in outcome["output"] and "Traceback" not in outcome["output"], "no stack dump"


def test_after_kill_9_resume_runs_each_trial_once_and_never_reruns_a_finished_one(interrupted_search):
    kill = interrupted_search["kill"]
    assert kill["code"] == -signal.SIGKILL
    task = interrupted_search["task"]
    trials = pd.read_parquet(task / "trials.parquet")
    epochs = pd.read_parquet(task / "epochs.parquet")
    assert len(trials) == TRIALS and trials["trial_id"].is_unique
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for trial_id in kill["finished"]:
        stamps = epochs.loc[epochs["trial_id"] == trial_id, "timestamp"]
        assert len(stamps) and (stamps <= kill["at"]).all(), f"{trial_id} finished before the kill and ran again"
        trial_dir = next(interrupted_search["experiment"].glob(f"train_trial_{trial_id}_*"))
        reported = logged_results(trial_dir)
        assert all(r["timestamp"] <= kill["at"] for r in reported), f"{trial_id} reported after the kill"


def test_the_optuna_study_is_kept_beside_the_results_with_every_trial(interrupted_search):
    task = interrupted_search["task"]
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{task / 'study.db'}")
    trials = pd.read_parquet(task / "trials.parquet")
    told = {t.user_attrs["ray_trial_id"]: t for t in study.trials if "ray_trial_id" in t.user_attrs}
    assert set(trials["trial_id"]) <= set(told)
    assert all(told[t].state != optuna.trial.TrialState.RUNNING for t in trials["trial_id"])
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]

    app = optuna_dashboard.wsgi(f"sqlite:///{task / 'study.db'}")  # what `optuna-dashboard URL` serves
    environ: dict = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = f"/api/studies/{study._study_id}"
    page = json.loads(b"".join(app(environ, lambda status, headers, exc_info=None: None)))
    assert len(page["trials"]) == len(study.trials)


def test_a_retrain_killed_midway_and_resumed_writes_one_result_and_is_not_repeated(interrupted_search):
    task = interrupted_search["task"]
    assert interrupted_search["retrain_kill"]["code"] == -signal.SIGKILL
    assert not interrupted_search["retrain_kill"]["best"], "the kill should land before best.json is written"
    resumed, again = interrupted_search["resumed"], interrupted_search["again"]
    assert resumed["code"] == 0, resumed["output"][-2000:]
    best = json.loads((task / "best.json").read_text())
    assert best["trials"]["total"] == TRIALS
    # the variants were chosen, retrained and tested after the kill: each of them once, the ensemble saved
    assert [(v["variant"], v["tta"]) for v in best["variants"]] == [
        (variant, tta) for variant in ("single", "ensemble") for tta in (False, True)
    ]
    assert best["model_variant"] == "ensemble" and best["tta"] is True
    [saved] = [v for v in best["variants"] if v["variant"] == "ensemble" and v["tta"]]
    assert best["saved_test_acc"] == saved["test_acc"]  # the saved model's own test, not another variant's
    [single] = [v for v in best["variants"] if v["variant"] == "single" and not v["tta"]]
    assert best["test_acc"] == single["test_acc"], "test_acc is the best configuration's retrain, as the contract says"
    manifest = json.loads((task / "model" / "manifest.json").read_text())
    assert [m["trial_id"] for m in manifest["members"]] == [m["trial_id"] for m in best["variants"][-1]["members"]]
    assert all((task / "model" / m["path"] / "weights.safetensors").is_file() for m in manifest["members"])
    assert sorted(p.name for p in task.iterdir() if "model" in p.name) == ["model"]
    assert again["code"] == 0 and again["output"].startswith("## Best configuration"), again["output"][-2000:]
    assert (task / "model" / "manifest.json").stat().st_mtime == resumed["model_mtime"]
    assert json.loads((task / "best.json").read_text()) == best


def test_resume_needs_the_same_search_and_a_new_search_does_not_overwrite_one(interrupted_search, capsys):
    argv = interrupted_search["kill"]["argv"][3:]  # the command the Ctrl-C printed, without "python -m search"
    assert main([a if a != str(TRIALS) else "7" for a in argv]) == 2
    assert f"--trials: {TRIALS} then, 7 now" in capsys.readouterr().err
    assert main([a for a in argv if a != "--resume"]) == 2
    assert "continue it with --resume, replace it with --overwrite" in capsys.readouterr().err
    other = interrupted_search["out"] / "elsewhere"
    assert main([*argv, "--out", str(other)]) == 2
    assert "--resume: no search of" in capsys.readouterr().err

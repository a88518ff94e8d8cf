"""Faults for real: a trial's worker killed mid-epoch, a trial that always raises, Ctrl-C and kill -9 of the driver
followed by --resume, and a retrain killed midway. Nothing here imitates a failure: processes are killed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard
import pandas as pd
import pytest
from ray import cloudpickle, tune

from datasets import make_demo_dataset
from results import best_trial, epochs_frame, trials_frame
from search import main
from search.cluster import node_resources, plan_resources
from search.data import resolve_task
from search.driver import Plan, Prepared, run_task, write_trial_tables
from search.errors import SearchInterrupted
from search.options import SearchOptions
from search.tuner import SearchFiles, run_trials
from trainables import Range, TrialSetup, train_trial

LIMIT_S = 240  # no single stage of a test may hang the suite longer than this

pytestmark = pytest.mark.slow  # real driver processes killed at chosen moments


def _wait(condition, what: str, timeout: float = LIMIT_S, process: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (value := condition()) is not None:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the search exited ({process.returncode}) before {what}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _results(trial_dir: Path) -> list[dict]:
    """The results Ray Tune logged for a trial, one per reported epoch (a line still being written is left out)."""
    path = trial_dir / "result.json"
    text = path.read_text() if path.is_file() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n") and line.strip()]


def _statuses(experiment: Path) -> dict[str, str]:
    """Trial id -> status in the newest experiment snapshot Ray Tune saved (what --resume will see)."""
    for path in sorted(experiment.glob("experiment_state-*.json"), reverse=True)[:1]:
        try:
            trials = [json.loads(data) for data, _ in json.loads(path.read_text())["trial_data"]]
        except (json.JSONDecodeError, OSError):
            return {}  # being rewritten
        return {t["trial_id"]: t["status"] for t in trials}
    return {}


@pytest.fixture(scope="module")
def eggs(tmp_path_factory) -> Path:
    """Enough images that an epoch lasts long enough to be killed in the middle."""
    return make_demo_dataset("egg", tmp_path_factory.mktemp("eggs"), per_class={"train": 80, "valid": 16, "test": 16})


def test_a_worker_killed_mid_epoch_resumes_from_its_checkpoint_and_records_each_epoch_once(ray_cluster, eggs, tmp_path):
    options = SearchOptions(
        task=str(eggs),
        backbones=("resnet10t",),
        pretrained="off",
        trials=1,  # too few for a recipe: one seeded sample (its last stages train)
        max_epochs=3,
        image_size=64,  # epochs long enough that a busy machine still kills inside the second
        retrain=False,
        out=str(tmp_path),
    )
    prepared = Prepared(options)
    experiment = Path(prepared.files.experiment)
    killed: dict = {}

    def kill_during_second_epoch():
        trial_dir = _wait(lambda: next(experiment.glob("train_trial_*"), None), "the trial to start")
        first = _wait(lambda: (_results(trial_dir) or [None])[0], "the first epoch")
        spent = _cpu_seconds(first["pid"])
        # inside the second epoch: the worker has computed a tenth of the first epoch's time since reporting it (the
        # first epoch's time counts the model's set-up too, and a busy machine's waits, so a larger share can reach
        # past the second epoch)
        _wait(lambda: _cpu_seconds(first["pid"]) - spent > 0.1 * first["time_this_iter_s"] or None, "epoch 2")
        os.kill(first["pid"], signal.SIGKILL)
        killed.update(pid=first["pid"], epochs=len(_results(trial_dir)))

    killer = threading.Thread(target=kill_during_second_epoch, daemon=True)
    killer.start()
    run_task(prepared)
    killer.join(timeout=5)
    assert killed.get("epochs") == 1, "the worker should have died during its second epoch"

    trials = pd.read_parquet(tmp_path / prepared.data.task.name / "trials.parquet")
    epochs = pd.read_parquet(tmp_path / prepared.data.task.name / "epochs.parquet")
    assert trials["status"].tolist() == ["TERMINATED"] and trials["failures"].tolist() == [1]
    assert epochs["epoch"].tolist() == [1, 2, 3]  # each once, though epoch 2 started twice
    history = _results(next(experiment.glob("train_trial_*")))
    assert [h["epoch"] for h in history] == [1, 2, 3], "the new worker continued from epoch 1's checkpoint"
    pids = [h["pid"] for h in history]
    assert pids[0] == killed["pid"] and killed["pid"] not in pids[1:], "epochs 2 and 3 ran in a new worker"


def always_raises_for_the_first_recipe(config: dict, setup: TrialSetup) -> None:
    """A trial whose configuration can never work (here: the first baseline recipe); the others train."""
    if config["freeze_depth"] == 0 and config["lr"] == 1e-3:
        raise ValueError(f"this configuration cannot train: lr={config['lr']}, freeze_depth=0")
    train_trial(config, setup)


def test_a_trial_that_always_raises_ends_as_error_after_its_retries_and_the_others_finish(ray_cluster, eggs, tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
    prepared = Prepared(
        SearchOptions(task=str(eggs), backbones=("resnet10t",), pretrained="off", image_size=24, out=str(tmp_path))
    )
    files = SearchFiles.under(tmp_path, None, "raises")
    setup = TrialSetup(prepared.data.cache, max_epochs=2)
    points = [{"backbone": "resnet10t", "freeze_depth": 0, "lr": 1e-3, "aug_strength": 0.0, "weight_decay": 1e-4}]
    points[0] |= {"batch_size": 32, "label_smoothing": 0.0, "dropout": 0.0}
    outcome = run_trials(
        setup,
        ["resnet10t"],
        trials=3,
        resources=plan_resources(node_resources(), 1, 0, None),
        files=files,
        resume=False,
        points=[("recipe", p) for p in points],
        max_failures=1,
        trainable=always_raises_for_the_first_recipe,
    )
    trials = trials_frame(outcome.records, max_epochs=2)
    failed = trials[trials["status"] == "ERROR"]
    assert len(trials) == 3 and not outcome.interrupted
    assert len(failed) == 1 and failed["failures"].tolist() == [2], "one first run and max_failures=1 restart"
    assert "ValueError: this configuration cannot train" in failed["error"].iloc[0]
    assert (trials.loc[trials["status"] != "ERROR", "epochs_run"] >= 1).all()
    assert best_trial(trials)["trial_id"] not in failed["trial_id"].tolist()


def _one_trial(
    eggs: Path,
    tmp_path: Path,
    trainable,
    *,
    image_size: int,
    batch_size: int,
    max_epochs: int,
    max_failures: int,
    name: str = "one",
    resume: bool = False,
    callbacks=(),
):
    """One trial of full fine-tuning of resnet10t on ``eggs``, run by ``trainable`` through the search's Tuner."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
    prepared = Prepared(
        SearchOptions(
            task=str(eggs), backbones=("resnet10t",), pretrained="off", image_size=image_size, out=str(tmp_path)
        )
    )
    point = {"backbone": "resnet10t", "freeze_depth": 0, "lr": 1e-3, "aug_strength": 0.0, "weight_decay": 1e-4}
    point |= {"batch_size": batch_size, "label_smoothing": 0.0, "dropout": 0.0}
    return run_trials(
        TrialSetup(prepared.data.cache, max_epochs=max_epochs),
        ["resnet10t"],
        trials=1,
        resources=plan_resources(node_resources(), 1, 0, None),
        files=SearchFiles.under(tmp_path, None, name),
        resume=resume,
        points=[("recipe", point)],
        max_failures=max_failures,
        trainable=trainable,
        callbacks=callbacks,
        ranges={"batch_size": Range(choices=(batch_size,))},  # a batch the declared space may not offer
    )


def damages_its_checkpoint_then_dies(config: dict, setup: TrialSetup) -> None:
    """The first run garbles the checkpoint Ray Tune keeps of epoch 1 (as a disk error would) and dies right after
    reporting it; the run Ray Tune restarts from that checkpoint is the real trainable."""
    marker = Path(config.pop("marker"))
    if not marker.exists():
        marker.touch()
        report = tune.report

        def report_then_die(metrics, checkpoint=None):
            report(metrics, checkpoint=checkpoint)
            kept = Path(tune.get_checkpoint().path) / "model.safetensors"  # the copy in the experiment's storage
            kept.write_bytes(bytes(kept.stat().st_size))
            os._exit(1)

        tune.report = report_then_die  # this worker process dies with it
    train_trial(config, setup)


def test_a_trial_restored_from_a_damaged_checkpoint_starts_again_and_records_each_epoch_once(
    ray_cluster, eggs, tmp_path
):
    def trainable(config: dict, setup: TrialSetup) -> None:
        damages_its_checkpoint_then_dies({**config, "marker": str(tmp_path / "died")}, setup)

    outcome = _one_trial(eggs, tmp_path, trainable, image_size=24, batch_size=32, max_epochs=2, max_failures=1)
    trials = trials_frame(outcome.records, max_epochs=2)
    assert trials["status"].tolist() == ["TERMINATED"] and trials["failures"].tolist() == [1]
    history = [h["epoch"] for h in outcome.records[0]["history"]]
    assert history == [1, 1, 2], "the restarted run began again at epoch 1, not from the damaged weights"
    assert epochs_frame(outcome.records)["epoch"].tolist() == [1, 2]


class KillAfterTheSecondSave(tune.Callback):
    """kill -9 of the driver right after Ray Tune registered a trial's second checkpoint, before the experiment
    snapshot that names it: the moment Ray's own num_to_keep deleted the checkpoint the last snapshot names. Once:
    the restored search, which unpickles this callback too, finds the marker."""

    def __init__(self, marker: Path):
        self.marker, self.saves = marker, 0

    def on_trial_save(self, iteration, trials, trial, **info):
        self.saves += 1
        if self.saves == 2 and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


def saved_run(eggs: str, out: Path, resume: bool, callbacks=()):
    """The one trial, 3 epochs, of the test below (also in the driver process it kills)."""
    return _one_trial(
        Path(eggs),
        out,
        train_trial,
        image_size=24,
        batch_size=32,
        max_epochs=3,
        max_failures=1,
        name="saved",
        resume=resume,
        callbacks=callbacks,
    )


KILLED_DRIVER = """
import sys
from pathlib import Path
import ray
from tests.search_tests.test_faults import KillAfterTheSecondSave, saved_run

ray.init(num_cpus=1, include_dashboard=False)
out = Path(sys.argv[2])
saved_run(sys.argv[1], out, resume=False, callbacks=[KillAfterTheSecondSave(out / "killed")])
"""


def test_a_driver_killed_as_ray_registers_a_checkpoint_resumes_the_trial_from_a_checkpoint_that_exists(
    ray_cluster, eggs, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_DRIVER, str(eggs), str(out)],
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
        start_new_session=True,
        cwd=Path(__file__).parents[2],  # where `tests` imports from
    )
    assert killed.returncode == -signal.SIGKILL and (out / "killed").exists(), killed.stderr[-2000:]

    records = saved_run(str(eggs), out, resume=True).records

    trials = trials_frame(records, max_epochs=3)
    assert trials["status"].tolist() == ["TERMINATED"], trials["error"].tolist()
    assert epochs_frame(records)["epoch"].tolist() == [1, 2, 3]
    left = sorted(p.name for p in (out / "tune" / "saved").glob("train_trial_*/checkpoint_*"))
    assert len(left) == 1, f"the older checkpoints are deleted once a snapshot names a newer one: {left}"


class CtrlCAfterTheFirstTrial(tune.Callback):
    """Ctrl-C as the first trial ends: one trial at a time, so the next one does not exist yet."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        os.kill(os.getpid(), signal.SIGINT)  # Ray Tune's handler (the test runs in the main thread) ends the run


def test_ctrl_c_between_two_trials_stops_the_search_instead_of_retraining_the_one_finished(ray_cluster, eggs, tmp_path):
    options = SearchOptions(
        task=str(eggs), backbones=("resnet10t",), pretrained="off", trials=3, image_size=24, out=str(tmp_path)
    )
    prepared = Prepared(options)
    point = {"backbone": "resnet10t", "freeze_depth": 3, "lr": 1e-3, "aug_strength": 0.0, "weight_decay": 1e-4}
    point |= {"batch_size": 32, "label_smoothing": 0.0, "dropout": 0.0}
    setup = TrialSetup(prepared.data.cache, max_epochs=1)
    outcome = run_trials(
        setup,
        ["resnet10t"],
        trials=3,
        resources=plan_resources(node_resources(), 1, 0, 1),
        files=prepared.files,
        resume=False,
        points=[("recipe", point)],
        callbacks=[CtrlCAfterTheFirstTrial()],
    )
    assert [r["finished"] for r in outcome.records] == [True], "Ray Tune returns the one finished trial alone"
    plan = Plan(setup, None, ["resnet10t"], [], {}, {"resnet10t": False}, 0.0, None)
    with pytest.raises(SearchInterrupted, match="stopped with 1 of 3 trials finished"):
        write_trial_tables(prepared, plan, outcome)
    assert len(pd.read_parquet(tmp_path / prepared.data.task.name / "trials.parquet")) == 1


# --- the driver: Ctrl-C, then kill -9, then kill -9 during the retrain, each followed by --resume -------------------

TRIALS = 5
STOPS = 3  # the driver stopped before --resume: kill -9, Ctrl-C, kill -9 as a checkpoint appears


def _command(eggs: Path, out: Path, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "search", str(eggs), "--out", str(out), "--trials", str(TRIALS)),
        *("--max-epochs", "3", "--image-size", "32", "--backbones", "resnet10t", "--pretrained", "off", *extra),
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


def _cpu_seconds(pid: int) -> float:
    """The CPU time a process has used (user and system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _retrain_worker() -> int | None:
    """The Ray worker running a retrain, once it has used a second of CPU (training, not starting up)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"ray::retrain" in (proc / "cmdline").read_bytes() and _cpu_seconds(int(proc.name)) > 1.0:
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
            done = [t for t, s in _statuses(experiment).items() if s == "TERMINATED"]
            return done if len(done) >= count else None

        return check

    # 0. kill -9 before any trial has reported
    zeroth = Driver(_command(eggs, out), out / "0.log")
    _wait(lambda: next(experiment.glob("train_trial_*"), None), "a trial to start", process=zeroth.process)
    zeroth.process.send_signal(signal.SIGKILL)
    stages["early_kill"] = {
        "code": zeroth.finish(),
        "reported": [_results(t) for t in experiment.glob("train_trial_*")],
    }

    # 1. Ctrl-C (SIGINT to the whole process group, as a terminal sends it) once a trial has finished
    first = Driver(_command(eggs, out, "--resume"), out / "1.log")
    done = _wait(finished(1), "a finished trial", process=first.process)
    os.killpg(first.process.pid, signal.SIGINT)
    stages["ctrl_c"] = {"code": first.finish(), "output": first.output(), "finished": done}
    stages["ctrl_c"]["trials"] = pd.read_parquet(out / task / "trials.parquet")

    # 2. the printed command, killed with SIGKILL (the driver alone) once three trials have finished, as a trial's
    # next checkpoint appears (trials pending)
    printed = stages["ctrl_c"]["output"].split("to continue: ")[-1].strip()
    argv = shlex.split(printed)
    second = Driver([sys.executable, *argv[1:]], out / "2.log")
    done = _wait(finished(3), "three finished trials", process=second.process)
    seen = set(experiment.glob("train_trial_*/checkpoint_*"))
    _wait(lambda: set(experiment.glob("train_trial_*/checkpoint_*")) - seen or None, "a new checkpoint", timeout=60)
    second.process.send_signal(signal.SIGKILL)
    stages["kill"] = {"code": second.finish(), "at": time.time(), "finished": done, "argv": argv}

    # 3. --resume to the end of the search, killed during the retrain
    third = Driver(_command(eggs, out, "--resume"), out / "3.log")
    _wait(lambda: "retraining trial" in third.output() or None, "the retrain to start", process=third.process)
    _wait(_retrain_worker, "the retrain's worker to train", process=third.process)
    third.process.send_signal(signal.SIGKILL)
    stages["retrain_kill"] = {"code": third.finish(), "at": time.time(), "best": (out / task / "best.json").exists()}

    # 4. --resume: nothing left to search, the retrain runs again
    resumed = Driver(_command(eggs, out, "--resume"), out / "resumed.log")
    stages["resumed"] = {"code": resumed.finish(), "output": resumed.output()}
    stages["resumed"]["model_mtime"] = (out / task / "model" / "weights.safetensors").stat().st_mtime

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
        reported = [h["epoch"] for h in _results(next(experiment.glob(f"train_trial_{trial_id}_*")))]
        collapsed = [e for i, e in enumerate(reported) if i == 0 or e != reported[i - 1]]
        assert collapsed == list(range(1, run + 1)), f"{trial_id} ran {reported}"
        assert len(reported) - run <= STOPS, f"{trial_id} ran an epoch again more often than the driver stopped"
    assert "re-use actor" not in "".join(p.read_text() for p in interrupted_search["out"].glob("*.log"))


def test_ctrl_c_exits_130_with_the_resume_command_and_the_finished_trials_tables(interrupted_search):
    stage = interrupted_search["ctrl_c"]
    assert stage["code"] == 130, stage["output"][-2000:]
    assert "to continue: python -m search" in stage["output"] and stage["output"].rstrip().endswith("--resume")
    trials = stage["trials"]
    assert set(stage["finished"]) <= set(trials["trial_id"]) and len(trials) < TRIALS
    assert trials["status"].isin(["TERMINATED", "STOPPED", "ERROR"]).all()
    assert (interrupted_search["task"] / "epochs.parquet").is_file()


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
        assert all(r["timestamp"] <= kill["at"] for r in _results(trial_dir)), f"{trial_id} reported after the kill"


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
    assert 0 <= best["test_acc"] <= 1 and best["trials"]["total"] == TRIALS
    assert sorted(p.name for p in task.iterdir() if "model" in p.name) == ["model"]
    assert again["code"] == 0 and again["output"].startswith("## Best configuration"), again["output"][-2000:]
    assert (task / "model" / "weights.safetensors").stat().st_mtime == resumed["model_mtime"]
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


# at 160 px, resnet10t needs 400-500 MB more to train a batch of 32 and 700-800 for 64: a cap between 32 and 64
# failed now and then (oneDNN's scratchpads vary). At 112 px (half the pixels, half the memory and time) a cap
# between 64 and 128 leaves 150-200 MB either side
MEMORY_CAP_MB = 560


def memory_capped_trial(config: dict, setup: TrialSetup) -> None:
    """A worker whose address space is capped, as a GPU's memory is: the allocator really fails."""
    import ctypes
    import resource

    # big blocks straight from mmap and back on free, as the CUDA allocator's are: glibc would otherwise keep
    # blocks up to 32 MB of the failed attempt in its heap, and the cap would count them
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD, fixed
    libc.mallopt(-8, 1)  # M_ARENA_MAX: each thread's own arena would reserve 64 MB of the capped address space
    status = Path("/proc/self/status").read_text().splitlines()
    size = next(int(line.split()[1]) for line in status if line.startswith("VmSize")) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_CAP_MB * 2**20, resource.RLIM_INFINITY))
    train_trial(config, setup)


def test_a_batch_that_does_not_fit_in_memory_is_retried_once_at_half_the_size(ray_cluster, eggs, tmp_path):
    outcome = _one_trial(
        eggs, tmp_path, memory_capped_trial, image_size=112, batch_size=128, max_epochs=1, max_failures=0
    )
    trials = trials_frame(outcome.records, max_epochs=1)
    assert trials["status"].tolist() == ["TERMINATED"], trials["error"].tolist()
    assert trials["batch_size"].tolist() == [128] and trials["trained_batch_size"].tolist() == [64]

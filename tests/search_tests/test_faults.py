"""Faults for real inside a search: a trial's worker killed mid-epoch, a trial that always raises, a damaged checkpoint,
a driver killed as Ray Tune registers a checkpoint, Ctrl-C between two trials, a batch too big for memory. Nothing
here imitates a failure: processes are killed (the driver's own kill chain: test_kill_chain.py)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from ray import cloudpickle, tune

from results import best_trial, epochs_frame, trials_frame
from search.cluster.session import node_resources, plan_resources
from search.command_line.options import SearchOptions
from search.driver import Plan, Prepared, run_task, write_trial_tables
from search.failures import SearchInterrupted
from search.inputs.lock import TaskLocks
from search.tuning.ledger import TrialLedger
from search.tuning.tuner import SearchFiles, run_trials
from tests.search_tests.processes import LIMIT_S, cpu_seconds, logged_results, wait_for
from trainables import Range, TrialSetup, train_trial

pytestmark = pytest.mark.slow  # real worker and driver processes killed at chosen moments


def test_a_worker_killed_mid_epoch_resumes_from_its_checkpoint_and_records_each_epoch_once(
    ray_cluster, eggs, tmp_path, locks
):
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
    prepared = Prepared(options, locks)
    experiment = Path(prepared.files.experiment)
    killed: dict = {}

    def kill_during_second_epoch():
        trial_dir = wait_for(lambda: next(experiment.glob("train_trial_*"), None), "the trial to start")
        first = wait_for(lambda: (logged_results(trial_dir) or [None])[0], "the first epoch")
        spent = cpu_seconds(first["pid"])
        # inside the second epoch: the worker has computed a tenth of the first epoch's time since reporting it (the
        # first epoch's time counts the model's set-up too, and a busy machine's waits, so a larger share can reach
        # past the second epoch)
        wait_for(
            lambda: cpu_seconds(first["pid"]) - spent > 0.1 * first["time_this_iter_s"] or None, "epoch 2", poll=0.1
        )
        os.kill(first["pid"], signal.SIGKILL)
        killed.update(pid=first["pid"], epochs=len(logged_results(trial_dir)))

    killer = threading.Thread(target=kill_during_second_epoch, daemon=True)
    killer.start()
    run_task(prepared)
    killer.join(timeout=5)
    assert killed.get("epochs") == 1, "the worker should have died during its second epoch"

    trials = pd.read_parquet(tmp_path / prepared.data.task.name / "trials.parquet")
    epochs = pd.read_parquet(tmp_path / prepared.data.task.name / "epochs.parquet")
    assert trials["status"].tolist() == ["TERMINATED"] and trials["failures"].tolist() == [1]
    assert epochs["epoch"].tolist() == [1, 2, 3]  # each once, though epoch 2 started twice
    history = logged_results(next(experiment.glob("train_trial_*")))
    assert [h["epoch"] for h in history] == [1, 2, 3], "the new worker continued from epoch 1's checkpoint"
    pids = [h["pid"] for h in history]
    assert pids[0] == killed["pid"] and killed["pid"] not in pids[1:], "epochs 2 and 3 ran in a new worker"


def always_raises_for_the_first_recipe(config: dict, setup: TrialSetup) -> None:
    """A trial whose configuration can never work (here: the first baseline recipe); the others train."""
    if config["freeze_depth"] == 0 and config["lr"] == 1e-3:
        raise ValueError(f"this configuration cannot train: lr={config['lr']}, freeze_depth=0")
    train_trial(config, setup)


def test_a_trial_that_always_raises_ends_as_error_after_its_retries_and_the_others_finish(
    ray_cluster, eggs, tmp_path, locks
):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
    prepared = Prepared(
        SearchOptions(task=str(eggs), backbones=("resnet10t",), pretrained="off", image_size=24, out=str(tmp_path)),
        locks,
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
    with TaskLocks() as locks:  # held while the trial runs, as the driver holds it
        prepared = Prepared(
            SearchOptions(
                task=str(eggs), backbones=("resnet10t",), pretrained="off", image_size=image_size, out=str(tmp_path)
            ),
            locks,
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


def test_ctrl_c_between_two_trials_stops_the_search_instead_of_retraining_the_one_finished(
    ray_cluster, eggs, tmp_path, locks
):
    options = SearchOptions(
        task=str(eggs), backbones=("resnet10t",), pretrained="off", trials=3, image_size=24, out=str(tmp_path)
    )
    prepared = Prepared(options, locks)
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
    ledger = TrialLedger.of(prepared.files.ledger)  # the one the search just wrote
    plan = Plan(setup, None, ["resnet10t"], [], {}, {"resnet10t": False}, ledger, None)
    with pytest.raises(SearchInterrupted, match="stopped with 1 of 3 trials finished"):
        write_trial_tables(prepared, plan, outcome)
    assert len(pd.read_parquet(tmp_path / prepared.data.task.name / "trials.parquet")) == 1


# at 160 px, resnet10t needs 400-500 MB more to train a batch of 32 and 700-800 for 64: a cap between 32 and 64
# failed now and then (oneDNN's scratchpads vary). At 112 px (half the pixels, half the memory and time) a cap
# between 64 and 128 leaves 150-200 MB either side
def memory_capped_trial(config: dict, setup: TrialSetup, cap_mb: int) -> None:
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
    resource.setrlimit(resource.RLIMIT_AS, (size + cap_mb * 2**20, resource.RLIM_INFINITY))
    train_trial(config, setup)


# at 560 MB the batch of 128 fails in PyTorch's allocator, at 620 MB inside a oneDNN primitive (measured here)
@pytest.mark.parametrize("cap_mb", [560, 620])
def test_a_batch_that_does_not_fit_in_memory_is_retried_once_at_half_the_size(ray_cluster, eggs, tmp_path, cap_mb):
    trainable = functools.partial(memory_capped_trial, cap_mb=cap_mb)
    outcome = _one_trial(eggs, tmp_path, trainable, image_size=112, batch_size=128, max_epochs=1, max_failures=0)
    trials = trials_frame(outcome.records, max_epochs=1)
    assert trials["status"].tolist() == ["TERMINATED"], trials["error"].tolist()
    assert trials["batch_size"].tolist() == [128] and trials["trained_batch_size"].tolist() == [64]

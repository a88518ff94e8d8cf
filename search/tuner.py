"""Ray Tune wiring: OptunaSearch (TPE) proposes, ASHA stops the weak, every epoch is checkpointed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from datasets import UsageError
from search.cluster import Resources
from search.space import METRIC, MODE, make_searcher
from trainables import TrialSetup, train_trial

EXPERIMENT = "search"


def make_scheduler(max_epochs: int) -> ASHAScheduler:
    """Rungs at a quarter, half and all of ``max_epochs``; at each, the lower half stops."""
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_epochs,
        grace_period=max(1, max_epochs // 4),
        reduction_factor=2,
    )


def experiment_path(storage: str) -> str:
    return storage.rstrip("/") + "/" + EXPERIMENT


def run_trials(
    setup: TrialSetup,
    backbones: list[str],
    trials: int,
    resources: Resources,
    storage: str,
    resume: bool,
    finished_before: bool,
    points: list[dict],
    max_failures: int = 2,
) -> list[dict]:
    """Run (or continue) the search and return one plain record per trial."""
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, setup=setup),
        {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial},
    )
    path = experiment_path(storage)
    exists = tune.Tuner.can_restore(path)
    if resume:
        if not exists:
            raise UsageError(f"--resume: no search to continue in {path}; run without --resume to start one")
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        if exists and not finished_before:
            raise UsageError(
                f"an unfinished search is in {path}; continue it with --resume, "
                "or pass another --out to start a new one"
            )
        if exists and "://" not in storage:
            shutil.rmtree(path)  # the previous search finished and its tables are written; start afresh
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=METRIC,  # the scheduler's and the progress table's; the searcher gets it at creation
                mode=MODE,
                search_alg=make_searcher(backbones, setup.seed, trials, points=points),
                scheduler=make_scheduler(setup.max_epochs),
                num_samples=trials,
                max_concurrent_trials=resources.concurrency,
            ),
            run_config=tune.RunConfig(
                name=EXPERIMENT,
                storage_path=storage,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                verbose=1,
            ),
        )
    # keeping one checkpoint per trial forces a state snapshot per epoch; that is intended, not worth a warning
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    grid = tuner.fit()
    return [_record(result) for result in grid]


def _record(result: tune.Result) -> dict:
    frame = result.metrics_dataframe
    history = [] if frame is None else frame.to_dict("records")
    last = history[-1] if history else result.metrics or {}
    return {
        "trial_id": (result.metrics or {}).get("trial_id") or Path(result.path).name,
        "config": dict(result.config or {}),
        "history": history,
        "node": last.get("node", ""),
        "error": None if result.error is None else _error_line(result.error),
    }


def _error_line(error: BaseException) -> str:
    """The original exception's last line (``ValueError: ...``), not Ray's wrapper and traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__

"""Ray Tune wiring: an Optuna study (TPE) proposes, ASHA stops the weak, every epoch is checkpointed, and a search
killed at any point continues with ``Tuner.restore``."""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from pyarrow import fs
from ray import tune
from ray.tune.experiment import Trial

from search.cluster.follow import FollowCluster
from search.cluster.session import Resources
from search.tuning.asha import make_scheduler
from search.tuning.budget import BudgetedSearch, TimeBudget
from search.tuning.ledger import SEARCH_FILE, TrialLedger
from search.tuning.progress import Progress
from search.tuning.retention import CheckpointRetention, snapshot_period
from search.tuning.space import METRIC, MODE, make_searcher
from trainables import Range, TrialSetup, train_trial
from trainables.checkpoint import STATE_FILE

__all__ = ["FINISHED", "Outcome", "SearchFiles", "error_line", "newest_checkpoint", "run_trials"]

FINISHED = (Trial.TERMINATED, Trial.ERROR)


@dataclass(frozen=True)
class SearchFiles:
    """Where one task's search keeps its state: Ray Tune's experiment, the Optuna study and the ledger (search.json)."""

    experiment: str  # a local path or a URI
    study: Path
    ledger: Path

    @classmethod
    def under(cls, task_dir: Path, storage: str | None, name: str) -> SearchFiles:
        root = storage or str(task_dir / "tune")
        if "://" not in root:
            root = str(Path(root).expanduser().resolve())
        return cls(root.rstrip("/") + "/" + name, task_dir / "study.db", task_dir / SEARCH_FILE)

    def exists(self) -> bool:
        return tune.Tuner.can_restore(self.experiment)

    def study_url(self) -> str:
        return f"sqlite:///{self.study}"


@dataclass
class Outcome:
    """What ``run_trials`` gives back: one record per trial, and whether Ctrl-C ended the search early."""

    records: list[dict]
    interrupted: bool


def run_trials(
    setup: TrialSetup,
    backbones: list[str],
    *,
    trials: int,
    resources: Resources,
    files: SearchFiles,
    resume: bool,
    points: list[tuple[str, dict]],
    max_failures: int = 2,
    trainable: Callable[[dict, TrialSetup], None] = train_trial,
    verbose: bool = False,
    stopper: tune.Stopper | None = None,
    callbacks: Sequence[tune.Callback] = (),
    ranges: Mapping[str, Range] | None = None,
    known: Mapping[str, float] | None = None,
    ledger: TrialLedger | None = None,
) -> Outcome:
    """Run (or, with ``resume``, continue) the search; the caller has checked that ``files`` fit the request.
    ``callbacks`` join the search's own (a restored search keeps those it started with); ``ranges`` replace the
    declared space's (a config file's); ``known`` validation results (name -> metric) count at ASHA's rungs;
    ``ledger``: the one the stopper and callbacks read (else this opens ``files.ledger``'s)."""
    ledger = ledger or TrialLedger.open(files.ledger, fresh=not resume)
    wrapped = tune.with_resources(
        tune.with_parameters(trainable, setup=setup),
        {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial},
    )
    if resume:
        tuner = tune.Tuner.restore(files.experiment, trainable=wrapped, resume_unfinished=True, resume_errored=False)
    else:
        storage = optuna.storages.RDBStorage(files.study_url())
        searcher = make_searcher(backbones, setup.seed, trials, setup.max_epochs, storage, points, ranges)
        if resources.cluster:  # nodes may join or leave: the limit is read again from the live ones
            searcher = FollowCluster(searcher, resources)
        if isinstance(stopper, TimeBudget):
            searcher = BudgetedSearch(searcher, stopper)
        *storage_path, name = files.experiment.split("/")
        tuner = tune.Tuner(
            wrapped,
            tune_config=tune.TuneConfig(
                metric=METRIC,  # the scheduler's and the progress table's; the searcher gets it at creation
                mode=MODE,
                search_alg=searcher,
                scheduler=make_scheduler(setup.max_epochs, ledger, known),
                # with a time budget the budget ends the search: trials start while the plan fits, beyond --trials
                num_samples=-1 if isinstance(stopper, TimeBudget) else trials,
                max_concurrent_trials=None if resources.cluster else resources.concurrency,
                # a new trial runs in a finished one's worker: no new process importing torch and timm (about 9 s
                # a trial here, benchmarks/overhead.py); train_trial frees its memory before it returns. Not on
                # a cluster: Ray Tune hands a trial whose worker is still starting on another node (perhaps one just
                # joined) to the worker just freed and drops the starting one, so trials pile onto the first nodes
                reuse_actors=not resources.cluster,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path="/".join(storage_path),
                stop=stopper,
                # CheckpointRetention, not num_to_keep, deletes old checkpoints: Ray's deletion can lose a trial
                failure_config=tune.FailureConfig(max_failures=max_failures),
                callbacks=[
                    ledger,
                    Progress(name, 0 if isinstance(stopper, TimeBudget) else trials, setup.max_epochs, ledger),
                    CheckpointRetention(),
                    *callbacks,
                ],
                verbose=1 if verbose else 0,  # Ray Tune's own tables with -v; one line per ended trial without
            ),
        )
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = snapshot_period(files.experiment)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # "no metrics" of pending trials
    grid = tuner.fit()
    # the statuses as saved, which --resume will see: after Ctrl-C Ray marks the live trials TERMINATED in memory
    by_path = {t.path: t for t in tune.ExperimentAnalysis(files.experiment).trials}
    records = [_record(result, by_path[result.path]) for result in grid]
    return Outcome(records, interrupted=not all(r["finished"] for r in records))


def _record(result: tune.Result, trial: Trial) -> dict:
    frame = result.metrics_dataframe
    history = [] if frame is None else frame.to_dict("records")
    last = history[-1] if history else result.metrics or {}
    return {
        "trial_id": trial.trial_id,
        "config": dict(result.config or {}),
        "history": history,
        "node": last.get("node", ""),
        "error": None if result.error is None else error_line(result.error),
        "finished": trial.status in FINISHED,
        "failures": trial.run_metadata.num_failures,
        "checkpoint": newest_checkpoint(result),  # what soups and ensembles are made of
    }


def newest_checkpoint(result: tune.Result) -> tune.Checkpoint | None:
    """The trial's newest complete checkpoint on storage: Ray Tune's ``result.checkpoint`` can name the one before,
    when the time budget stopped the trial on the result that brought the newer one."""
    if result.checkpoint is None:
        return None
    filesystem, trial_dir = result.checkpoint.filesystem, posixpath.dirname(result.checkpoint.path)
    try:
        entries = filesystem.get_file_info(fs.FileSelector(trial_dir))
        names = sorted(
            e.base_name for e in entries if e.type == fs.FileType.Directory and e.base_name.startswith("checkpoint_")
        )
        for name in reversed(names):
            path = posixpath.join(trial_dir, name)
            if filesystem.get_file_info(posixpath.join(path, STATE_FILE)).type == fs.FileType.File:
                return tune.Checkpoint(path, filesystem=filesystem)
    except OSError:
        pass
    return result.checkpoint


def error_line(error: BaseException) -> str:
    """The original exception's last line (``ValueError: ...``), not Ray's wrapper and traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__

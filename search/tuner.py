"""Ray Tune wiring: OptunaSearch (TPE) proposes, ASHA stops the weak, every epoch is checkpointed, and a search
killed at any point continues with ``Tuner.restore``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler

from datasets import DamagedFile, short
from results import read_json, write_json
from search.cluster import Resources
from search.progress import Progress
from search.space import METRIC, MODE, make_searcher
from trainables import TrialSetup, train_trial

FINISHED = (Trial.TERMINATED, Trial.ERROR)


# without the file the search goes on, and ASHA compares the trials still to come with each other only
RUNGS_FIX = "delete it and --resume again, or start the search anew with --overwrite"
CHEAP = 0.1  # a trial whose remaining epochs cost less than this share of an average epoch runs on


class ResumableASHA(ASHAScheduler):
    """ASHA whose rungs survive a killed driver. Ray Tune saves the searcher with the experiment but rebuilds the
    scheduler as it was at the start, so the rungs are mirrored to a JSON file and read back when unpickled.

    A trial whose remaining epochs cost less than a tenth of the search's average epoch (a linear probe on cached
    features beside fine-tuning trials) is not stopped: stopping it saves nothing, and TPE learns more from its
    last epoch than from a pruned first one."""

    def __init__(self, state_file: str | Path, **kwargs):
        super().__init__(**kwargs)
        self._state_file = str(state_file)
        self._epoch_s: dict[str, float] = {}  # trial -> seconds per epoch so far

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        epochs = max(1, int(result.get("epoch", 1)))
        self._epoch_s[trial.trial_id] = float(result.get("wall_s", 0.0)) / epochs
        average = sum(self._epoch_s.values()) / len(self._epoch_s)
        cheap = self._epoch_s[trial.trial_id] * (self._max_t - epochs) < CHEAP * average
        return self.CONTINUE if action == self.STOP and cheap else action

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def rungs(self) -> list[list[tuple[float, dict[str, float]]]]:
        """Per bracket, each rung's milestone and the results recorded there (trial id -> signed metric)."""
        return [[(float(m), {t: float(v) for t, v in rec.items()}) for m, rec in b._rungs] for b in self._brackets]

    def _save(self) -> None:
        write_json(Path(self._state_file), {"rungs": self.rungs(), "stopped": self._num_stopped})

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        path = Path(self._state_file)
        saved = read_json(path, RUNGS_FIX)
        if not saved:
            return
        try:
            for bracket, rungs in zip(self._brackets, saved["rungs"], strict=True):
                bracket._rungs = [(float(milestone), dict(recorded)) for milestone, recorded in rungs]
            self._num_stopped = int(saved["stopped"])
        except (KeyError, TypeError, ValueError) as e:
            raise DamagedFile(path, short(e), RUNGS_FIX) from None


def make_scheduler(max_epochs: int, state_file: str | Path) -> ResumableASHA:
    """Rungs at a quarter, half and all of ``max_epochs``; at each, the lower half stops. The time is the trial's
    own epoch count, which a restored trial continues, not Ray's iteration counter."""
    return ResumableASHA(
        state_file,
        time_attr="epoch",
        max_t=max_epochs,
        grace_period=max(1, max_epochs // 4),
        reduction_factor=2,
    )


@dataclass(frozen=True)
class SearchFiles:
    """Where one task's search keeps its state: Ray Tune's experiment, the Optuna study and ASHA's rungs."""

    experiment: str  # a local path or a URI
    study: Path
    rungs: Path

    @classmethod
    def under(cls, task_dir: Path, storage: str | None, name: str) -> SearchFiles:
        root = storage or str(task_dir / "tune")
        if "://" not in root:
            root = str(Path(root).expanduser().resolve())
        return cls(root.rstrip("/") + "/" + name, task_dir / "study.db", task_dir / "rungs.json")

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
    trials: int,
    resources: Resources,
    files: SearchFiles,
    resume: bool,
    points: list[tuple[str, dict]],
    max_failures: int = 2,
    trainable: Callable[[dict, TrialSetup], None] = train_trial,
    verbose: bool = False,
    stopper: tune.Stopper | None = None,
) -> Outcome:
    """Run (or, with ``resume``, continue) the search; the caller has checked that ``files`` fit the request."""
    wrapped = tune.with_resources(
        tune.with_parameters(trainable, setup=setup),
        {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial},
    )
    if resume:
        tuner = tune.Tuner.restore(files.experiment, trainable=wrapped, resume_unfinished=True, resume_errored=False)
    else:
        storage = optuna.storages.RDBStorage(files.study_url())
        *storage_path, name = files.experiment.split("/")
        tuner = tune.Tuner(
            wrapped,
            tune_config=tune.TuneConfig(
                metric=METRIC,  # the scheduler's and the progress table's; the searcher gets it at creation
                mode=MODE,
                search_alg=make_searcher(backbones, setup.seed, trials, setup.max_epochs, storage, points),
                scheduler=make_scheduler(setup.max_epochs, files.rungs),
                num_samples=trials,
                max_concurrent_trials=resources.concurrency,
                # a new trial runs in a finished one's worker: no new process importing torch and timm (about 9 s
                # a trial here, benchmarks/overhead.py); train_trial frees its memory before it returns. Not on
                # several nodes: Ray Tune hands a trial whose worker is still starting on another node to the worker
                # just freed and drops the starting one, so short trials pile onto the node that starts fastest
                reuse_actors=resources.nodes == 1,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path="/".join(storage_path),
                stop=stopper,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                callbacks=[Progress(name, trials, setup.max_epochs)],
                verbose=1 if verbose else 0,  # Ray Tune's own tables with -v; one line per ended trial without
            ),
        )
    # keeping one checkpoint per trial forces a state snapshot per epoch; that is intended, not worth a warning
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
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
    }


def error_line(error: BaseException) -> str:
    """The original exception's last line (``ValueError: ...``), not Ray's wrapper and traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__

"""One line per finished trial instead of Ray Tune's tables: done, running, the best so far, time left."""

from __future__ import annotations

import logging
import time

from ray import tune
from ray.tune.experiment import Trial

from results import stopped_early
from search.tuning.ledger import TrialLedger
from search.tuning.space import METRIC

__all__ = ["Progress"]

log = logging.getLogger("search.tuning.progress")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress(tune.Callback):
    """Logs a line each time a trial ends; the estimate assumes the remaining trials cost what the ended ones did
    (``total`` 0: the time budget decides how many, and the line gives no estimate)."""

    def __init__(self, task: str, total: int, max_epochs: int, ledger: TrialLedger):
        self.task, self.total, self.max_epochs, self.ledger = task, total, max_epochs, ledger
        self.started = time.monotonic()

    def setup(self, **info) -> None:
        self.started = time.monotonic()  # also after a restore: the estimate is for this run

    # Ray Tune calls these before it changes the trial's status, so the ending trial is passed on with its outcome
    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        log.info(self.line(trials, trial, Trial.TERMINATED))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        log.info(self.line(trials, trial, Trial.ERROR))

    def line(self, trials: list[Trial], ending: Trial, outcome: str) -> str:
        status = {t.trial_id: t.status for t in trials} | {ending.trial_id: outcome}
        ended = [t for t in trials if status[t.trial_id] in (Trial.TERMINATED, Trial.ERROR)]
        errored = sum(status[t.trial_id] == Trial.ERROR for t in trials)
        stopped = sum(
            status[t.trial_id] == Trial.TERMINATED
            and stopped_early((t.last_result or {}).get("epoch", 0), self.max_epochs)
            for t in trials
        )
        running = sum(status[t.trial_id] == Trial.RUNNING for t in trials)
        elapsed = time.monotonic() - self.started
        best = "no result yet"
        if (leader := self.ledger.best()) is not None:
            trial_id, entry = leader
            best = f"best {METRIC} {entry.best()[0]:.3f} ({entry.backbone}, trial {trial_id})"
        left = ""
        if 0 < len(ended) < self.total:
            left = f", about {_duration(elapsed / len(ended) * (self.total - len(ended)))} left"
        done = f"{len(ended)}/{self.total}" if self.total else str(len(ended))
        return (
            f"{self.task}: {done} trials done ({stopped} stopped early, {errored} errored), "
            f"{running} running; {best}; {_duration(elapsed)} elapsed{left}"
        )

"""``--time-budget``: the search stops early enough that the retrain, and the tables after it, end within the budget."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from pathlib import Path

from ray import tune

from datasets import UsageError
from results import read_json, write_json

__all__ = ["BUDGET_FILE", "MARGIN", "SEARCH_FIX", "TimeBudget", "UNITS", "parse_duration"]

log = logging.getLogger(__name__)
SEARCH_FIX = "put back the file the search wrote, or start the search anew with --overwrite"  # search.json damaged
BUDGET_FILE = "budget.json"  # written when the budget first stops a trial or the search
UNITS = {"h": 3600, "m": 60, "s": 1}
MARGIN = 1.25  # the retrain's estimate is a trial's epochs scaled: keep a quarter more for model builds and tables


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``20m``, ``1h30m``."""
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text or "")
    if not text or not text.strip() or parts is None or not any(parts.groups()):
        raise UsageError(f"--time-budget {text!r}: give a duration such as 90s, 20m or 1h30m")
    seconds = sum(float(v) * u for v, u in zip(parts.groups(), UNITS.values(), strict=True) if v)
    if seconds <= 0:
        raise UsageError(f"--time-budget must be longer than 0, got {text!r}")
    return seconds


class TimeBudget(tune.Stopper):
    """Stops each trial whose next epoch would eat into the time the retrain needs, and the whole search (no new
    trials) when no trial's epoch fits any more. The retrain's time is estimated from the best trial so far: its
    seconds per epoch, times ``max_epochs``, times ``retrain_scale`` (more images: train+val; several seeds).

    The budget left is counted from when this stopper is made (or restored, from ``state_file``'s record of the
    time the search has already run); when it first stops something it writes ``BUDGET_FILE``."""

    def __init__(self, seconds_left: float, max_epochs: int, retrain_scale: float, state_file: Path, budget_s: float):
        self.seconds_left, self.max_epochs, self.retrain_scale = seconds_left, max_epochs, retrain_scale
        self.state_file, self.budget_s = Path(state_file), budget_s
        self.started = time.monotonic()
        self.epoch_s: dict[str, float] = {}
        self.best: tuple[float, str] = (-math.inf, "")
        self.fired = False
        self.pid = os.getpid()

    def remaining(self) -> float:
        return self.seconds_left - (time.monotonic() - self.started)

    def reserve(self) -> float:
        """Seconds to keep for the retrain of the best configuration so far."""
        return self.epoch_s.get(self.best[1], 0.0) * self.max_epochs * self.retrain_scale * MARGIN

    def __call__(self, trial_id: str, result: dict) -> bool:
        epochs = max(1, int(result.get("epoch", 1)))
        self.epoch_s[trial_id] = float(result.get("wall_s", 0.0)) / epochs
        value = result.get("val_acc")
        if isinstance(value, float | int) and math.isfinite(value) and value > self.best[0]:
            self.best = (float(value), trial_id)
        if epochs >= self.max_epochs:
            return False
        return self._fire(self.remaining() < self.reserve() + self.epoch_s[trial_id], f"trial {trial_id}")

    def stop_all(self) -> bool:
        shortest = min(self.epoch_s.values(), default=0.0)
        return bool(self.epoch_s) and self._fire(self.remaining() < self.reserve() + shortest, "the search")

    def _fire(self, stop: bool, what: str) -> bool:
        if stop and not self.fired:
            self.fired = True
            log.info(
                "time budget: stopping %s with %.0f s left, %.0f s kept for the retrain",
                what,
                self.remaining(),
                self.reserve(),
            )
            write_json(self.state_file.with_name(BUDGET_FILE), {"budget_s": self.budget_s, "stopped": what})
        return stop

    def __setstate__(self, state: dict) -> None:
        """Restored by ``--resume``: the budget left is what the earlier runs did not spend."""
        self.__dict__.update(state)
        if self.pid == os.getpid():  # a copy within this run, not a restore
            return
        self.pid = os.getpid()
        spent = read_json(self.state_file, SEARCH_FIX).get("elapsed_s", 0.0)
        self.seconds_left = self.budget_s - spent
        self.started = time.monotonic()

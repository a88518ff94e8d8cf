"""``--time-budget``: a plan of the whole command from what this run measured. The final stage's reserve is the sum of
its members' own retrain costs (a probe member its head fit and test pass, a fine-tuning member its epochs at the
retrain's measured speed); each trial's next epoch must fit beside it, and no trial starts once a first epoch does not.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.search import Searcher

from datasets import UsageError
from results import read_json, write_json
from search.final.choose import ensemble_choice
from trainables.combine import checkpoint_probs
from trainables.steps import epoch_size

__all__ = [
    "BUDGET_FILE",
    "BudgetProbs",
    "BudgetedSearch",
    "Costs",
    "FIXED_S",
    "TABLES_S",
    "SEARCH_FIX",
    "TimeBudget",
    "UNITS",
    "member_cost",
    "parse_duration",
]

log = logging.getLogger(__name__)
SEARCH_FIX = "put back the file the search wrote, or start the search anew with --overwrite"  # search.json damaged
BUDGET_FILE = "budget.json"  # the plan against what each stage took; its "ended_by" says what ended the search
UNITS = {"h": 3600, "m": 60, "s": 1}
# seconds the final stage spends whatever its members: choosing them and trying test-time augmentation in Ray tasks,
# then writing the tables, plots and report (57 s and 5 s beside the members' own on sports-a50 here, with two
# members' flipped validation passes in the 57 s), and a Ray task's start and model build per member
CHOOSE_S = 30.0
TABLES_S = 10.0
FIXED_S = CHOOSE_S + TABLES_S
TASK_S = 4.0


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``20m``, ``1h30m``."""
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text or "")
    if not text or not text.strip() or parts is None or not any(parts.groups()):
        raise UsageError(f"--time-budget {text!r}: give a duration such as 90s, 20m or 1h30m")
    seconds = sum(float(v) * u for v, u in zip(parts.groups(), UNITS.values(), strict=True) if v)
    if seconds <= 0:
        raise UsageError(f"--time-budget must be longer than 0, got {text!r}")
    return seconds


@dataclass(frozen=True)
class Costs:
    """What this run measured before the first trial: per backbone, the seconds of one image's frozen forward pass
    at the retrain's threads and of fitting its probe head; the retrain's speed-up over a trial's threads; the splits'
    sizes and the image side."""

    forward_s: dict[str, float]  # backbone -> seconds per image, forward only, at the retrain's threads
    head_s: dict[str, float]  # backbone -> seconds to choose and fit the probe head on train
    speedup: float  # a trial's training step time over the retrain's, measured on this machine
    sizes: dict[str, int]
    image_size: int
    max_epochs: int
    progressive: bool = False  # ``TrialSetup.progressive``: the first epochs train smaller
    tta: bool = True  # the final stage tests with and without the flip: two test passes per member

    def area(self, epoch: int) -> float:
        """Epoch ``epoch``'s pixels against a full-size epoch's."""
        side = epoch_size(self.image_size, epoch, self.max_epochs) if self.progressive else self.image_size
        return (side / self.image_size) ** 2

    def test_s(self, backbone: str) -> float:
        """The member's test passes (and a flipped validation pass to decide test-time augmentation)."""
        f = self.forward_s.get(backbone, max(self.forward_s.values(), default=0.0))
        return f * (self.sizes["test"] * (2 if self.tta else 1) + self.sizes["val"])

    def first_epoch_s(self, backbone: str) -> float:
        """A fine-tuning trial's first epoch before one has run: a training step is about three forward passes, at
        the first epoch's side, and the validation pass at the full side."""
        f = self.forward_s.get(backbone, max(self.forward_s.values(), default=0.0)) * self.speedup
        return f * (3 * self.area(0) * self.sizes["train"] + self.sizes["val"])


def member_cost(costs: Costs, trial: dict) -> float:
    """Seconds to retrain ``trial`` (a ledger entry) on train+val and test it: a probe refits its head on train+val
    features and runs the epochs it kept; a fine-tuning trial runs every epoch of the schedule, from its own measured
    training speed, over more images, at the retrain's threads."""
    backbone, more = trial["backbone"], (costs.sizes["train"] + costs.sizes["val"]) / costs.sizes["train"]
    if trial["on_features"]:
        return TASK_S + costs.head_s.get(backbone, 0.0) * more + costs.test_s(backbone)
    full = trial["full_epoch_s"]  # one epoch's training steps at the full side, on the train split
    area = sum(costs.area(e) for e in range(costs.max_epochs))
    return TASK_S + full * area * more / costs.speedup + costs.test_s(backbone)


@dataclass
class TimeBudget(tune.Stopper):
    """The plan, re-made after every result: the final stage's members are the best trial so far and the ensemble of
    up to ``members`` that greedy selection picks from the trials' newest validation probabilities (``labels``; the
    ``members`` best trials before any probabilities arrive), its reserve their summed costs plus ``FIXED_S``. A trial
    stops when its next epoch does not fit before the reserve; ``BudgetedSearch`` starts no trial once a first epoch
    does not.

    The budget left is counted from when this is made (or restored by ``--resume``, from ``state_file``'s record of the
    time the search has already run)."""

    seconds_left: float
    budget_s: float
    costs: Costs
    members: int
    state_file: Path
    labels: np.ndarray | None = None  # the validation split's: what the ensemble is chosen against
    started: float = field(default_factory=time.monotonic)
    ledger: dict[str, dict] = field(default_factory=dict)  # trial id -> what the plan knows of it
    probs: dict[str, np.ndarray] = field(default_factory=dict)  # trial id -> its newest checkpoint's
    ended_by: str = ""
    pid: int = field(default_factory=os.getpid)

    def remaining(self) -> float:
        return self.seconds_left - (time.monotonic() - self.started)

    def record(self, trial_id: str, result: dict) -> None:
        """A trial's epoch: its speed and score (idempotent: the searcher and the stopper both pass it on)."""
        epoch = int(result.get("epoch", 0))
        value = result.get("val_acc")
        if not epoch or not isinstance(value, float | int) or not math.isfinite(value):
            return
        entry = self.ledger.setdefault(trial_id, {"val_acc": -math.inf})
        if entry.get("epoch", 0) >= epoch:
            return
        side = int(result.get("train_size") or self.costs.image_size)
        area = (side / self.costs.image_size) ** 2
        entry.update(
            backbone=result.get("config", {}).get("backbone", entry.get("backbone", "")),
            on_features=bool(result.get("on_features")),
            epoch=epoch,
            epoch_s=float(result.get("wall_s", 0.0)) - entry.get("wall_s", 0.0),
            wall_s=float(result.get("wall_s", 0.0)),
            full_epoch_s=float(result.get("train_s", 0.0)) / max(area, 1e-9),
        )
        loss = float(result.get("val_loss", math.inf))
        if (float(value), -loss) > (entry["val_acc"], -entry.get("val_loss", math.inf)):  # its best epoch, as tables
            entry.update(val_acc=float(value), val_loss=loss)

    def plan(self) -> list[tuple[str, float]]:
        """The final stage's members as it stands: (trial id, seconds), the best trial first."""
        if not self.members or not self.ledger:
            return []
        # as results.ranked_trials ranks them: accuracy, then loss, then fewer epochs, then the id
        ledger = self.ledger
        ranked = sorted(ledger, key=lambda t: (-ledger[t]["val_acc"], ledger[t]["val_loss"], ledger[t]["epoch"], t))
        costs = {t: member_cost(self.costs, ledger[t]) for t in ranked}
        chosen = []
        if self.labels is not None:
            # what the final stage could still afford once the epochs under way end: a member that no longer fits
            # leaves the plan (and its reserve), as it would leave the final stage's choice
            allowance = self.remaining() - FIXED_S - self.in_flight() - costs[ranked[0]]
            extra = costs | {ranked[0]: 0.0}
            chosen = list(ensemble_choice(ranked, self.probs, self.labels, self.members, extra, allowance)[0])
        members = [ranked[0], *(t for t in (chosen or ranked[: self.members]) if t != ranked[0])]
        return [(t, costs[t]) for t in members]

    def in_flight(self, but: str = "") -> float:
        """Seconds until the epochs already under way (other than ``but``'s) end: they run whatever the plan says."""
        now = time.monotonic()
        ends = [e["until"] - now for t, e in self.ledger.items() if t != but and not e.get("done") and "until" in e]
        return max([0.0, *ends])

    def reserve(self) -> float:
        return FIXED_S + sum(s for _, s in self.plan())

    def next_epoch_s(self, trial_id: str) -> float:
        """The trial's next epoch: its last one's training steps at the next side, plus the rest it measured."""
        e = self.ledger[trial_id]
        if e["on_features"]:
            return e["epoch_s"]
        change = self.costs.area(e["epoch"]) - self.costs.area(e["epoch"] - 1)
        return e["epoch_s"] + e["full_epoch_s"] * change

    def admits_new(self) -> bool:
        """Whether a new trial's first epoch still fits: the fine-tuning trials' cheapest measured first epoch, or
        before one ran the estimate from the screening's speed."""
        firsts = [e["first_s"] for e in self.ledger.values() if "first_s" in e]
        backbones = {e["backbone"] for e in self.ledger.values()} or set(self.costs.forward_s)
        first = min(firsts) if firsts else min((self.costs.first_epoch_s(b) for b in backbones), default=0.0)
        fits = self.remaining() - self.in_flight() >= self.reserve() + first
        return not self._fire(not fits, "no new trial's first epoch fits")

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.record(trial_id, result)
        entry = self.ledger.get(trial_id)
        if entry is None:
            return False
        if entry["epoch"] >= self.costs.max_epochs:
            entry["done"] = True
            return False
        if entry["epoch"] == 1 and not entry["on_features"]:
            entry.setdefault("first_s", entry["epoch_s"])
        upcoming = self.next_epoch_s(trial_id)
        stop = self._fire(
            self.remaining() - self.in_flight(but=trial_id) < self.reserve() + upcoming,
            f"trial {trial_id}'s next epoch does not fit",
        )
        if stop:
            entry["done"] = True
        else:
            entry["until"] = time.monotonic() + upcoming
        return stop

    def finished(self, trial_id: str) -> None:
        """A trial ended (completed, stopped or failed): none of its epochs is under way."""
        if trial_id in self.ledger:
            self.ledger[trial_id]["done"] = True

    def stop_all(self) -> bool:
        return False  # running trials end on their own epochs; new ones are refused by BudgetedSearch

    def _fire(self, stop: bool, why: str) -> bool:
        if stop and not self.ended_by:
            self.ended_by = why
            log.info(
                "time budget: %s (%.0f s left, %.0f s kept for the final stage)", why, self.remaining(), self.reserve()
            )
            self.write()
        return stop

    def write(self, **actual: object) -> None:
        """``BUDGET_FILE``: the budget, what ended the search, the plan's members and reserve now, and ``actual``."""
        path = self.state_file.with_name(BUDGET_FILE)
        old = read_json(path, SEARCH_FIX) if path.is_file() else {}
        record = {
            "budget_s": self.budget_s,
            "ended_by": self.ended_by or old.get("ended_by", ""),
            "stopped": self.ended_by or old.get("stopped", ""),
            "plan": {
                "members": [{"trial_id": t, "seconds": round(s, 1)} for t, s in self.plan()],
                "final_s": round(self.reserve(), 1),
                "left_at_stop_s": round(self.remaining(), 1),
                "speedup": round(self.costs.speedup, 2),
            },
        }
        write_json(path, {**old, **record, **actual})

    def __setstate__(self, state: dict) -> None:
        """Restored by ``--resume``: the budget left is what the earlier runs did not spend."""
        self.__dict__.update(state)
        if self.pid == os.getpid():  # a copy within this run, not a restore
            return
        self.pid = os.getpid()
        spent = read_json(self.state_file, SEARCH_FIX).get("elapsed_s", 0.0)
        self.seconds_left = self.budget_s - spent
        self.started = time.monotonic()
        for entry in self.ledger.values():  # another process's clock: the restored trials start their epochs anew
            entry.pop("until", None)


class BudgetedSearch(Searcher):
    """The searcher, asked for a new trial only while the time budget admits one (the first always); it passes every
    result to the budget too (which the stopper also does: the ledger takes each epoch once)."""

    def __init__(self, searcher: Searcher, budget: TimeBudget):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher, self.budget = searcher, budget
        self.asked = 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        if self.asked and not self.budget.admits_new():  # the first trial runs whatever the budget: a model needs one
            return Searcher.FINISHED
        config = self.searcher.suggest(trial_id)
        self.asked += config is not None and config != Searcher.FINISHED
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.budget.record(trial_id, result)
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.budget.finished(trial_id)
        self.searcher.on_trial_complete(trial_id, result, error)

    def get_state(self) -> dict:  # as Ray's ConcurrencyLimiter: the wrapper's own state; the searcher saves its own
        return {"asked": self.asked}

    def set_state(self, state: dict) -> None:
        self.asked = state["asked"]

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


class BudgetProbs(tune.Callback):
    """Hands each new checkpoint's validation probabilities to the budget's plan (``TimeBudget.probs``)."""

    def __init__(self, budget: TimeBudget):
        self.budget = budget

    def on_checkpoint(self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: tune.Checkpoint, **info):
        probs = checkpoint_probs(checkpoint)
        if probs is not None:
            self.budget.probs[trial.trial_id] = probs

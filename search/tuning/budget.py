"""``--time-budget``: a plan of the whole command from what this run measured. The final stage's reserve is the sum of
its members' own retrain costs (a probe member its head fit and test pass, a fine-tuning member its epochs at the
retrain's measured speed); each trial's next epoch must fit beside it, and no trial starts once a first epoch does not.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import numpy as np
from ray import tune
from ray.tune.search import Searcher

from datasets import UsageError
from results import read_json, write_json
from search.final.choose import ensemble_choice
from search.tuning.ledger import SEARCH_FIX, Entry, TrialLedger
from trainables.steps import epoch_size

__all__ = [
    "BUDGET_FILE",
    "BudgetedSearch",
    "Costs",
    "FIXED_S",
    "TABLES_S",
    "TimeBudget",
    "UNITS",
    "member_cost",
    "parse_duration",
]

log = logging.getLogger(__name__)
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

    def full_epoch_s(self, trial: Entry) -> float:
        """The trial's last epoch's training steps, at the full side."""
        last = trial.epochs[-1]
        side = int(last.get("train_size") or self.image_size)
        return float(last.get("train_s", 0.0)) / max((side / self.image_size) ** 2, 1e-9)

    def first_epoch_s(self, backbone: str) -> float:
        """A fine-tuning trial's first epoch before one has run: a training step is about three forward passes, at
        the first epoch's side, and the validation pass at the full side."""
        f = self.forward_s.get(backbone, max(self.forward_s.values(), default=0.0)) * self.speedup
        return f * (3 * self.area(0) * self.sizes["train"] + self.sizes["val"])


def member_cost(costs: Costs, trial: Entry) -> float:
    """Seconds to retrain ``trial`` on train+val and test it: a probe refits its head on train+val features and runs
    the epochs it kept; a fine-tuning trial runs every epoch of the schedule, from its own measured training speed,
    over more images, at the retrain's threads."""
    backbone, more = trial.backbone, (costs.sizes["train"] + costs.sizes["val"]) / costs.sizes["train"]
    if trial.on_features:
        return TASK_S + costs.head_s.get(backbone, 0.0) * more + costs.test_s(backbone)
    area = sum(costs.area(e) for e in range(costs.max_epochs))
    return TASK_S + costs.full_epoch_s(trial) * area * more / costs.speedup + costs.test_s(backbone)


@dataclass
class TimeBudget(tune.Stopper):
    """The plan, re-made after every result from the ledger: the final stage's members are the best trial so far and
    the ensemble of up to ``members`` that greedy selection picks from the trials' newest validation probabilities
    (``labels``; the ``members`` best trials before any probabilities arrive), its reserve their summed costs plus
    ``FIXED_S``. A trial stops when its next epoch does not fit before the reserve; ``BudgetedSearch`` starts no trial
    once a first epoch does not. The time spent is the ledger's, which --resume continues."""

    budget_s: float
    costs: Costs
    members: int
    ledger: TrialLedger
    labels: np.ndarray | None = None  # the validation split's: what the ensemble is chosen against

    def remaining(self) -> float:
        return self.budget_s - self.ledger.elapsed()

    @property
    def ended_by(self) -> str:
        return self.ledger.ended_by

    def plan(self) -> list[tuple[str, float]]:
        """The final stage's members as it stands: (trial id, seconds), the best trial first."""
        entries = {t: e for t, e in self.ledger.entries.items() if e.epochs}
        if not self.members or not entries:
            return []
        # as results.ranked_trials ranks them: accuracy, then loss, then fewer epochs, then the id
        ranked = sorted(entries, key=lambda t: (tuple(-v for v in entries[t].best()), entries[t].epoch, t))
        costs = {t: member_cost(self.costs, entries[t]) for t in ranked}
        chosen = []
        if self.labels is not None:
            # what the final stage could still afford once the epochs under way end: a member that no longer fits
            # leaves the plan (and its reserve), as it would leave the final stage's choice
            allowance = self.remaining() - FIXED_S - self.in_flight() - costs[ranked[0]]
            extra = costs | {ranked[0]: 0.0}
            probs = {t: p for t in ranked if (p := self.ledger.probs(t)) is not None}
            chosen = list(ensemble_choice(ranked, probs, self.labels, self.members, extra, allowance)[0])
        members = [ranked[0], *(t for t in (chosen or ranked[: self.members]) if t != ranked[0])]
        return [(t, costs[t]) for t in members]

    def in_flight(self, but: str = "") -> float:
        """Seconds until the epochs already under way (other than ``but``'s) end: they run whatever the plan says."""
        now = time.monotonic()
        ends = [e.until - now for t, e in self.ledger.entries.items() if t != but and not e.done and e.until]
        return max([0.0, *ends])

    def reserve(self) -> float:
        return FIXED_S + sum(s for _, s in self.plan())

    def next_epoch_s(self, trial: Entry) -> float:
        """The trial's next epoch: its last one's training steps at the next side, plus the rest it measured."""
        if trial.on_features:
            return trial.epoch_s()
        change = self.costs.area(trial.epoch) - self.costs.area(trial.epoch - 1)
        return trial.epoch_s() + self.costs.full_epoch_s(trial) * change

    def admits_new(self) -> bool:
        """Whether a new trial's first epoch still fits: the fine-tuning trials' cheapest measured first epoch, or
        before one ran the estimate from the screening's speed."""
        entries = self.ledger.entries.values()
        firsts = [e.epoch_s(0) for e in entries if not e.on_features and e.epochs and e.epochs[0]["epoch"] == 1]
        backbones = {e.backbone for e in entries} or set(self.costs.forward_s)
        first = min(firsts) if firsts else min((self.costs.first_epoch_s(b) for b in backbones), default=0.0)
        fits = self.remaining() - self.in_flight() >= self.reserve() + first
        return not self._fire(not fits, "no new trial's first epoch fits")

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.ledger.record(trial_id, result)
        entry = self.ledger.entries.get(trial_id)
        if entry is None or not entry.epochs:
            return False
        if entry.epoch >= self.costs.max_epochs:
            self.ledger.end(trial_id)
            return False
        upcoming = self.next_epoch_s(entry)
        stop = self._fire(
            self.remaining() - self.in_flight(but=trial_id) < self.reserve() + upcoming,
            f"trial {trial_id}'s next epoch does not fit",
        )
        if stop:
            self.ledger.end(trial_id, stopped_by="budget")
        else:
            entry.until = time.monotonic() + upcoming
        return stop

    def stop_all(self) -> bool:
        return False  # running trials end on their own epochs; new ones are refused by BudgetedSearch

    def _fire(self, stop: bool, why: str) -> bool:
        if stop and not self.ended_by:
            self.ledger.end_search(why)
            log.info(
                "time budget: %s (%.0f s left, %.0f s kept for the final stage)", why, self.remaining(), self.reserve()
            )
            self.write()
        return stop

    def write(self, **actual: object) -> None:
        """``BUDGET_FILE``: the budget, what ended the search, the plan's members and reserve now, and ``actual``."""
        path = self.ledger.path.with_name(BUDGET_FILE)
        old = read_json(path, SEARCH_FIX) if path.is_file() else {}
        record = {
            "budget_s": self.budget_s,
            "ended_by": self.ended_by,
            "plan": {
                "members": [{"trial_id": t, "seconds": round(s, 1)} for t, s in self.plan()],
                "final_s": round(self.reserve(), 1),
                "left_at_stop_s": round(self.remaining(), 1),
                "speedup": round(self.costs.speedup, 2),
            },
        }
        write_json(path, {**old, **record, **actual})


class BudgetedSearch(Searcher):
    """The searcher, asked for a new trial only while the time budget admits one (the first always)."""

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
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.budget.ledger.end(trial_id)  # before the searcher is asked for the next: none of its epochs is under way
        self.searcher.on_trial_complete(trial_id, result, error)

    def get_state(self) -> dict:  # as Ray's ConcurrencyLimiter: the wrapper's own state; the searcher saves its own
        return {"asked": self.asked}

    def set_state(self, state: dict) -> None:
        self.asked = state["asked"]

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

"""Asynchronous successive halving (ASHA, Li et al., MLSys 2020) over the search's ledger: Ray Tune's
``AsyncHyperBandScheduler`` keeps its rungs in private attributes and is rebuilt as it was at the start when a search
is restored, so this one reads each rung from the ledger, which --resume continues. Its decisions are those of Ray's
with one bracket."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler

from search.tuning.ledger import TrialLedger
from search.tuning.space import METRIC, MODE

__all__ = ["ASHA", "make_scheduler"]

log = logging.getLogger(__name__)


class ASHA(FIFOScheduler):
    """At each rung (a milestone epoch), a trial whose metric falls below the best ``1 / reduction_factor`` of
    those recorded there so far stops; a trial reaching ``max_t`` ends. A trial's value at a rung is that of the
    first epoch it reported at or past the milestone, and it is judged there once.

    A linear probe on cached features is recorded at each rung but never stopped: its epochs cost milliseconds, it
    never reports less than the probe the screening fitted, and TPE learns more from its last epoch than from a
    pruned first one (on sports-a50 ASHA stopped the best backbone's probe at its first rung).

    ``known`` results, measured on the same validation split before the search (the screening's fitted probes), are
    recorded at every rung from the start: asynchronous halving otherwise judges its first trials against the few
    that happen to have reported, and on hymenoptera it let fine-tuning trials below the fitted probe run all their
    epochs (docs/measurements.md, "Cheaper fine-tuning")."""

    def __init__(
        self,
        ledger: TrialLedger,
        *,
        metric: str,
        mode: str,
        max_t: int,
        grace_period: int,
        reduction_factor: float,
        known: Mapping[str, float] | None = None,
    ):
        super().__init__()
        self.ledger, self.objective, self.max_t, self.reduction_factor = ledger, metric, max_t, reduction_factor
        self.sign = 1.0 if mode == "max" else -1.0
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
        self.milestones = [grace_period * reduction_factor**k for k in range(count)]
        self.known = {name: self.sign * value for name, value in (known or {}).items()}

    def rung(self, milestone: float, but: str = "") -> dict[str, float]:
        """The values recorded at ``milestone``: the known results and each trial's (``but``'s left out)."""
        values = dict(self.known)
        for trial_id, entry in self.ledger.entries.items():
            value = entry.value_at(milestone) if trial_id != but else None
            if value is not None:
                values[trial_id] = self.sign * value
        return values

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if "epoch" not in result or self.objective not in result:
            return self.CONTINUE
        self.ledger.record(trial.trial_id, result)
        epochs = int(result["epoch"])
        if epochs >= self.max_t:
            return self.STOP
        action = self._decide(trial.trial_id, epochs, self.sign * result[self.objective])
        if result.get("on_features"):
            return self.CONTINUE
        if action == self.STOP:
            self.ledger.end(trial.trial_id, stopped_by="asha")
        return action

    def _decide(self, trial_id: str, epochs: int, value: float) -> str:
        """Judge ``value`` at the highest rung ``epochs`` reached and the trial was not judged at yet."""
        entry = self.ledger.entries.get(trial_id)
        for milestone in sorted(self.milestones, reverse=True):
            if epochs < milestone or entry is None or milestone in entry.rungs:
                continue
            entry.rungs.append(milestone)
            self.ledger.save()
            recorded = self.rung(milestone, but=trial_id)
            cutoff = (
                np.nanpercentile(list(recorded.values()), 100 * (1 - 1 / self.reduction_factor)) if recorded else None
            )
            return self.STOP if cutoff is not None and value < cutoff else self.CONTINUE
        return self.CONTINUE

    def debug_string(self) -> str:
        stopped = sum(e.stopped_by == "asha" for e in self.ledger.entries.values())
        counts = ", ".join(f"{m:g}: {len(self.rung(m))}" for m in self.milestones)
        return f"ASHA: {stopped} stopped; rungs {counts}"


def make_scheduler(
    max_epochs: int,
    ledger: TrialLedger,
    known: Mapping[str, float] | None = None,
    metric: str = METRIC,
    mode: str = MODE,
) -> ASHA:
    """Rungs at a quarter, half and all of ``max_epochs``; at each, the lower half stops (``known`` results count
    there too). The time is the trial's own epoch count, which a restored trial continues, not Ray's iteration
    counter."""
    return ASHA(
        ledger,
        metric=metric,
        mode=mode,
        max_t=max_epochs,
        grace_period=max(1, max_epochs // 4),
        reduction_factor=2,
        known=known,
    )

"""Asynchronous successive halving (ASHA, Li et al., MLSys 2020) that owns its state: Ray Tune's
``AsyncHyperBandScheduler`` keeps its rungs in private attributes and is rebuilt as it was at the start when a search
is restored, so this one keeps them in its own attributes, mirrored to a JSON file after every decision and read
back when Ray Tune unpickles it on ``--resume``. Its decisions are those of Ray's with one bracket."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler

from datasets import DamagedFile, short
from results import read_json, write_json
from search.tuning.space import METRIC, MODE

__all__ = ["ASHA", "RUNGS_FIX", "make_scheduler"]

log = logging.getLogger(__name__)
# without the file the search goes on, and ASHA compares the trials still to come with each other only
RUNGS_FIX = "delete it and --resume again, or start the search anew with --overwrite"


class ASHA(FIFOScheduler):
    """At each rung (a milestone epoch), a trial whose metric falls below the best ``1 / reduction_factor`` of
    those recorded there so far stops; a trial reaching ``max_t`` ends.

    A linear probe on cached features is recorded at each rung but never stopped: its epochs cost milliseconds, it
    never reports less than the probe the screening fitted, and TPE learns more from its last epoch than from a
    pruned first one (on sports-a50 ASHA stopped the best backbone's probe at its first rung).

    ``known`` results, measured on the same validation split before the search (the screening's fitted probes), are
    recorded at every rung from the start: asynchronous halving otherwise judges its first trials against the few
    that happen to have reported, and on hymenoptera it let fine-tuning trials below the fitted probe run all their
    epochs (docs/measurements.md, "Cheaper fine-tuning")."""

    def __init__(
        self,
        state_file: str | Path,
        *,
        metric: str,
        mode: str,
        max_t: int,
        grace_period: int,
        reduction_factor: float,
        known: Mapping[str, float] | None = None,
    ):
        super().__init__()
        self.state_file = Path(state_file)
        self.objective, self.max_t, self.reduction_factor = metric, max_t, reduction_factor
        self.sign = 1.0 if mode == "max" else -1.0
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
        seeded = {name: self.sign * value for name, value in (known or {}).items()}
        self.rungs: dict[float, dict[str, float]] = {
            grace_period * reduction_factor**k: dict(seeded) for k in range(count)
        }
        self.stopped = 0  # as Ray counts: trials stopped at a rung and trials that reached max_t

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if "epoch" not in result or self.objective not in result:
            return self.CONTINUE
        epochs = int(result["epoch"])
        if epochs >= self.max_t:
            action = self.STOP
        else:
            action = self._decide(trial.trial_id, epochs, self.sign * result[self.objective])
            if result.get("on_features"):
                action = self.CONTINUE
        self.stopped += action == self.STOP
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        if result and "epoch" in result and self.objective in result:
            self._decide(trial.trial_id, int(result["epoch"]), self.sign * result[self.objective])
            self._save()

    def _decide(self, trial_id: str, epochs: int, value: float) -> str:
        """Record ``value`` at the highest rung ``epochs`` reached and not recorded yet, and compare it there."""
        for milestone in sorted(self.rungs, reverse=True):
            recorded = self.rungs[milestone]
            if epochs < milestone or trial_id in recorded:
                continue
            cutoff = (
                np.nanpercentile(list(recorded.values()), 100 * (1 - 1 / self.reduction_factor)) if recorded else None
            )
            recorded[trial_id] = value
            return self.STOP if cutoff is not None and value < cutoff else self.CONTINUE
        return self.CONTINUE

    def debug_string(self) -> str:
        return f"ASHA: {self.stopped} stopped; rungs " + ", ".join(f"{m:g}: {len(r)}" for m, r in self.rungs.items())

    def _save(self) -> None:
        rungs = [[milestone, recorded] for milestone, recorded in self.rungs.items()]
        write_json(self.state_file, {"rungs": rungs, "stopped": self.stopped})

    def __setstate__(self, state: dict) -> None:
        """Unpickled by Ray Tune's restore as the search started: the rungs since then come from the file."""
        self.__dict__.update(state)
        saved = read_json(self.state_file, RUNGS_FIX)
        if not saved:
            return
        try:
            listed = saved["rungs"]
            if listed and isinstance(listed[0][0], list):  # versions before this one wrote [bracket][rung]
                listed = listed[0]
            rungs = {float(m): {str(t): float(v) for t, v in recorded.items()} for m, recorded in listed}
            if set(rungs) != set(self.rungs):
                raise ValueError(f"rungs at {sorted(rungs)}, not this search's {sorted(self.rungs)}")
            self.rungs, self.stopped = rungs, int(saved["stopped"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DamagedFile(self.state_file, short(e), RUNGS_FIX) from None


def make_scheduler(
    max_epochs: int,
    state_file: str | Path,
    known: Mapping[str, float] | None = None,
    metric: str = METRIC,
    mode: str = MODE,
) -> ASHA:
    """Rungs at a quarter, half and all of ``max_epochs``; at each, the lower half stops (``known`` results count
    there too). The time is the trial's own epoch count, which a restored trial continues, not Ray's iteration
    counter."""
    return ASHA(
        state_file,
        metric=metric,
        mode=mode,
        max_t=max_epochs,
        grace_period=max(1, max_epochs // 4),
        reduction_factor=2,
        known=known,
    )

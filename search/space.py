"""The search space in Optuna's terms, and the seeded TPE searcher Ray Tune drives."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from ray.tune.search.optuna import OptunaSearch

from trainables import MAX_FREEZE_DEPTH

METRIC, MODE = "val_acc", "max"
BATCH_SIZES = (16, 32, 64)


def search_space(backbones: Sequence[str]) -> dict[str, BaseDistribution]:
    """The contract's space: backbone, freeze depth, augmentation, optimiser and loss knobs, head dropout."""
    return {
        "backbone": CategoricalDistribution(tuple(backbones)),
        "freeze_depth": IntDistribution(0, MAX_FREEZE_DEPTH),
        "aug_strength": FloatDistribution(0.0, 1.0),
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
        "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
        "batch_size": CategoricalDistribution(BATCH_SIZES),
        "label_smoothing": FloatDistribution(0.0, 0.2),
        "dropout": FloatDistribution(0.0, 0.5),
    }


def baseline_points(backbones: Sequence[str], trials: int) -> list[dict]:
    """Known-good recipes evaluated first: each backbone fully fine-tuned and as a linear probe, at a standard
    learning rate; at most half of the trials, so that TPE keeps the rest."""
    recipe = {"aug_strength": 0.3, "weight_decay": 1e-4, "batch_size": 32, "label_smoothing": 0.1, "dropout": 0.1}
    points = [{"backbone": b, "freeze_depth": 0, "lr": 1e-3, **recipe} for b in backbones]
    points += [{"backbone": b, "freeze_depth": MAX_FREEZE_DEPTH, "lr": 3e-3, **recipe} for b in backbones]
    return points[: trials // 2]


class StudySearch(OptunaSearch):
    """OptunaSearch on a persisted study: each Optuna trial names its Ray trial, and a restore fails the Optuna
    trials that were asked for after the last experiment snapshot (Ray Tune never ran them and never will)."""

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr("ray_trial_id", trial_id)
        return config

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        known = {t.number for t in self._ot_trials.values()}
        for orphan in self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if orphan.number not in known:
                self._ot_study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)


def make_searcher(
    backbones: Sequence[str],
    seed: int,
    trials: int,
    storage: optuna.storages.BaseStorage | None = None,
    points: Sequence[dict] = (),
) -> StudySearch:
    """TPE seeded by ``seed``, starting from ``points`` (warm start); then a third of the trials (3..10) are random
    start-up points before TPE models the results."""
    sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=min(10, max(3, trials // 3)), multivariate=True, constant_liar=True
    )
    return StudySearch(
        search_space(backbones),
        metric=METRIC,
        mode=MODE,
        sampler=sampler,
        storage=storage,
        study_name="search",
        points_to_evaluate=[dict(p) for p in points] or None,
    )

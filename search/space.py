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
    """The contract's space: backbone, freeze depth, augmentation, optimiser and loss knobs."""
    return {
        "backbone": CategoricalDistribution(tuple(backbones)),
        "freeze_depth": IntDistribution(0, MAX_FREEZE_DEPTH),
        "aug_strength": FloatDistribution(0.0, 1.0),
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
        "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
        "batch_size": CategoricalDistribution(BATCH_SIZES),
        "label_smoothing": FloatDistribution(0.0, 0.2),
    }


def make_searcher(
    backbones: Sequence[str], seed: int, trials: int, storage: optuna.storages.BaseStorage | None = None
) -> OptunaSearch:
    """TPE seeded by ``seed``; a third of the trials (3..10) are random start-up points before TPE models."""
    sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=min(10, max(3, trials // 3)), multivariate=True, constant_liar=True
    )
    return OptunaSearch(
        search_space(backbones), metric=METRIC, mode=MODE, sampler=sampler, storage=storage, study_name="search"
    )

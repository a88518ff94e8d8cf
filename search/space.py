"""The search space in Optuna's terms, the recipes that start a search, and the seeded TPE searcher Ray Tune drives."""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from ray.tune.search.optuna import OptunaSearch

from trainables import MAX_FREEZE_DEPTH

METRIC, MODE = "val_acc", "max"
BATCH_SIZES = (16, 32, 64)
SOURCES = ("warm-start", "recipe", "sampler")  # where a trial's configuration came from: trials.parquet's source


def search_space(backbones: Sequence[str]) -> dict[str, BaseDistribution]:
    """The contract's space: backbone, freeze depth, augmentation, optimiser and loss knobs, head dropout."""
    return {
        "backbone": CategoricalDistribution(tuple(backbones)),
        "freeze_depth": IntDistribution(0, MAX_FREEZE_DEPTH),
        "aug_strength": FloatDistribution(0.0, 1.0),
        "lr": FloatDistribution(1e-4, 1e-2, log=True),  # the head's; a pretrained backbone's is a tenth (LP-FT)
        "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
        "batch_size": CategoricalDistribution(BATCH_SIZES),
        "label_smoothing": FloatDistribution(0.0, 0.2),
        "dropout": FloatDistribution(0.0, 0.5),
    }


class ConditionalSpace:
    """The space sampled define-by-run: a linear probe (the last freeze depth) trains on the frozen backbone's cached
    features, where augmentation does not apply, so its ``aug_strength`` is 0 and never sampled."""

    def __init__(self, backbones: Sequence[str]):
        self.distributions = search_space(backbones)

    def __call__(self, trial: optuna.Trial) -> dict | None:
        depth = None
        for name, distribution in self.distributions.items():
            if name == "aug_strength" and depth == MAX_FREEZE_DEPTH:
                continue
            value = _suggest(trial, name, distribution)
            depth = value if name == "freeze_depth" else depth
        return {"aug_strength": 0.0} if depth == MAX_FREEZE_DEPTH else None


def _suggest(trial: optuna.Trial, name: str, d: BaseDistribution) -> object:
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, log=d.log)
    return trial.suggest_float(name, d.low, d.high, log=d.log)


def in_space(point: dict) -> dict:
    """A configuration as the conditional space holds it: a probe has no augmentation to set."""
    return {k: v for k, v in point.items() if not (k == "aug_strength" and point["freeze_depth"] == MAX_FREEZE_DEPTH)}


def baseline_points(backbones: Sequence[str], trials: int, pretrained: Collection[str]) -> list[dict]:
    """One known-good recipe per backbone, evaluated first, in the order given (most promising first): a pretrained
    backbone's linear probe (seconds on cached features), or, for a randomly initialised one, training it whole
    (its features are no probe's); at most half of the trials, so that TPE keeps the rest."""
    recipe = {"weight_decay": 1e-4, "batch_size": 32, "label_smoothing": 0.1, "dropout": 0.1}
    probe = {"freeze_depth": MAX_FREEZE_DEPTH, "lr": 3e-3}
    whole = {"freeze_depth": 0, "aug_strength": 0.3, "lr": 1e-3}
    points = [{"backbone": b, **(probe if b in pretrained else whole), **recipe} for b in backbones]
    return points[: trials // 2]


class StudySearch(OptunaSearch):
    """OptunaSearch on a persisted study that Optuna's tools read correctly:

    - each Optuna trial names its Ray trial (user attribute ``ray_trial_id``) and where its configuration came from
      (``source``: ``warm-start``, ``recipe`` or ``sampler``);
    - every epoch is an intermediate value at its epoch number, and a trial that ended before ``max_epochs`` (ASHA
      stopped it, or the time budget did) is PRUNED, not COMPLETE at an early epoch's accuracy, so TPE ranks it
      below the trials that ran to the end;
    - a restore fails the Optuna trials that were asked for after the last experiment snapshot (Ray Tune never ran
      them and never will).
    """

    def __init__(self, space: ConditionalSpace, max_epochs: int, points: Sequence[tuple[str, dict]] = (), **kwargs):
        super().__init__(space, **kwargs)
        self._max_epochs = max_epochs
        self._reported: dict[str, int] = {}  # trial -> last epoch reported; saved and restored with the searcher
        for source, point in points:
            self._ot_study.enqueue_trial(in_space(point), user_attrs={"source": source})

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            trial = self._ot_trials[trial_id]
            trial.set_user_attr("ray_trial_id", trial_id)
            if "source" not in trial.user_attrs:
                trial.set_user_attr("source", "sampler")
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value, epoch = result.get(self.metric), int(result.get("epoch", 0))
        if trial_id not in self._ot_trials or trial_id in self._completed_trials or not _finite(value):
            return
        if epoch > self._reported.get(trial_id, 0):
            self._ot_trials[trial_id].report(float(value), epoch)
            self._reported[trial_id] = epoch

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result:  # Ray Tune hands the result that ended a trial to this method alone
            self.on_trial_result(trial_id, result)
        value = (result or {}).get(self.metric)
        if error or not _finite(value):
            state, value = optuna.trial.TrialState.FAIL, None
        elif int(result.get("epoch", 0)) < self._max_epochs:
            state, value = optuna.trial.TrialState.PRUNED, None  # Optuna keeps its last intermediate value
        else:
            state = optuna.trial.TrialState.COMPLETE
        self._ot_study.tell(self._ot_trials[trial_id], value, state=state)
        self._completed_trials.add(trial_id)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        known = {t.number for t in self._ot_trials.values()}
        for orphan in self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if orphan.number not in known:
                self._ot_study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def make_searcher(
    backbones: Sequence[str],
    seed: int,
    trials: int,
    max_epochs: int,
    storage: optuna.storages.BaseStorage | None = None,
    points: Sequence[tuple[str, dict]] = (),
) -> StudySearch:
    """TPE seeded by ``seed``, starting from ``points`` (``(source, configuration)``, run first in order); then a
    quarter of the trials (3..10) are random start-up points before TPE models the results: the recipes, one per
    backbone and often probes alone, say little about the rest of the space."""
    with warnings.catch_warnings():  # ``group`` is marked experimental; it is how TPE models a conditional space
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=len(points) + min(10, max(3, trials // 4)),  # Optuna counts the recipes too
            multivariate=True,
            group=True,  # the space is conditional: a probe has no aug_strength
            constant_liar=True,
        )
    return StudySearch(
        ConditionalSpace(backbones),
        max_epochs,
        points,
        metric=METRIC,
        mode=MODE,
        sampler=sampler,
        storage=storage,
        study_name="search",
    )


def trial_sources(storage: str) -> dict[str, str]:
    """Ray trial id -> where its configuration came from, as the study recorded it."""
    study = optuna.load_study(study_name="search", storage=storage)
    return {
        t.user_attrs["ray_trial_id"]: t.user_attrs.get("source", "sampler")
        for t in study.get_trials(deepcopy=False)
        if "ray_trial_id" in t.user_attrs
    }

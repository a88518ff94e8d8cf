"""The search space in Optuna's terms, the recipes that start a search, and the seeded TPE searcher Ray Tune drives."""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Collection, Mapping, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from ray.tune.search import Searcher

from trainables import KNOBS, MAX_FREEZE_DEPTH, RECIPE, UNAUGMENTED_DEPTH, Range, knob_range

__all__ = [
    "ConditionalSpace",
    "METRIC",
    "MODE",
    "SOURCES",
    "StudySearch",
    "augmented",
    "baseline_points",
    "in_space",
    "make_searcher",
    "search_space",
    "space_range",
    "trial_sources",
    "within",
]

METRIC, MODE = "val_acc", "max"
SOURCES = ("warm-start", "recipe", "sampler")  # where a trial's configuration came from: trials.parquet's source


def search_space(backbones: Sequence[str], ranges: Mapping[str, Range] | None = None) -> dict[str, BaseDistribution]:
    """The contract's space in Optuna's terms, from ``TrialConfig``'s declaration (backbone, freeze depth,
    augmentation, optimiser and loss knobs, head dropout), with ``ranges`` (a config file's) in place of its own."""
    return {name: _distribution(space_range(name, ranges), backbones) for name in KNOBS}


def space_range(name: str, ranges: Mapping[str, Range] | None = None) -> Range | None:
    """Where the search samples ``name``: ``ranges``'s, else the declaration's."""
    return (ranges or {}).get(name) or knob_range(name)


def within(point: Mapping[str, object], ranges: Mapping[str, Range] | None) -> bool:
    """Whether a configuration lies inside ``ranges`` (a recipe or warm start outside a config file's space is left
    out: the user asked not to search there)."""
    for name, r in (ranges or {}).items():
        value = point.get(name)
        if value is None or (name == "aug_strength" and not augmented(point)):
            continue
        if (value not in r.choices) if r.choices else not (r.low <= value <= r.high):
            return False
    return True


def _distribution(r: Range | None, backbones: Sequence[str]) -> BaseDistribution:
    if r is None:
        return CategoricalDistribution(tuple(backbones))
    if r.choices:
        return CategoricalDistribution(r.choices)
    if isinstance(r.low, int) and isinstance(r.high, int):
        return IntDistribution(r.low, r.high, log=r.log)
    return FloatDistribution(r.low, r.high, log=r.log)


def augmented(point: Mapping[str, object]) -> bool:
    """Whether the search samples ``aug_strength`` for this configuration: not from ``UNAUGMENTED_DEPTH`` on."""
    return int(point.get("freeze_depth", 0)) < UNAUGMENTED_DEPTH


class ConditionalSpace:
    """The space sampled define-by-run: from ``UNAUGMENTED_DEPTH`` on (the last stage alone, or a linear probe on the
    frozen backbone's cached features) a trial is not augmented, so its ``aug_strength`` is 0 and never sampled."""

    def __init__(self, backbones: Sequence[str], ranges: Mapping[str, Range] | None = None):
        self.distributions = search_space(backbones, ranges)

    def __call__(self, trial: optuna.Trial) -> dict:
        """One configuration, sampled (or, for an enqueued recipe, read) through ``trial``."""
        config: dict = {}
        for name, distribution in self.distributions.items():
            fixed = name == "aug_strength" and not augmented(config)
            config[name] = 0.0 if fixed else _suggest(trial, name, distribution)
        return config


def _suggest(trial: optuna.Trial, name: str, d: BaseDistribution) -> object:
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, log=d.log)
    return trial.suggest_float(name, d.low, d.high, log=d.log)


def in_space(point: dict) -> dict:
    """A configuration as the conditional space holds it: from ``UNAUGMENTED_DEPTH`` on, no augmentation to set."""
    return {k: v for k, v in point.items() if not (k == "aug_strength" and not augmented(point))}


def baseline_points(backbones: Sequence[str], trials: int, pretrained: Collection[str]) -> list[dict]:
    """One known-good recipe per backbone, evaluated first, in the order given (most promising first): a pretrained
    backbone's linear probe (seconds on cached features), or, for a randomly initialised one, training it whole
    (its features are no probe's); at most half of the trials, so that TPE keeps the rest."""
    probe = {"freeze_depth": MAX_FREEZE_DEPTH, "lr": 3e-3}
    whole = {"freeze_depth": 0, "aug_strength": 0.3, "lr": 1e-3}
    points = [{"backbone": b, **(probe if b in pretrained else whole), **RECIPE} for b in backbones]
    return points[: trials // 2]


class StudySearch(Searcher):
    """TPE through Optuna's public ask-and-tell, on a persisted study that Optuna's tools read correctly:

    - each Optuna trial names its Ray trial (user attribute ``ray_trial_id``) and where its configuration came from
      (``source``: ``warm-start``, ``recipe`` or ``sampler``);
    - every epoch is an intermediate value at its epoch number, and a trial that ended before ``max_epochs`` (ASHA
      stopped it, or the time budget did) is PRUNED, not COMPLETE at an early epoch's accuracy, so TPE ranks it
      below the trials that ran to the end;
    - a restore fails the Optuna trials that were asked for after the last experiment snapshot (Ray Tune never ran
      them and never will), and leaves alone those told after it (Ray Tune may run their last epoch again).

    Ray Tune saves ``save()``'s small state with each experiment snapshot; the study itself lives in ``storage``.
    """

    def __init__(
        self,
        space: ConditionalSpace,
        max_epochs: int,
        points: Sequence[tuple[str, dict]] = (),
        *,
        sampler: optuna.samplers.BaseSampler,
        storage: optuna.storages.BaseStorage | None = None,
        study_name: str = "search",
    ):
        super().__init__(metric=METRIC, mode=MODE)
        self.space, self.max_epochs, self.study_name = space, max_epochs, study_name
        self.storage = storage if storage is not None else optuna.storages.InMemoryStorage()
        self.study = optuna.create_study(
            study_name=study_name, storage=self.storage, sampler=sampler, direction="maximize", load_if_exists=True
        )
        self.state: dict[str, dict] = {"numbers": {}, "reported": {}, "told": {}}  # per Ray trial id
        for source, point in points:
            self.study.enqueue_trial(in_space(point), user_attrs={"source": source})

    def suggest(self, trial_id: str) -> dict | None:
        trial = self.study.ask()
        config = self.space(trial)
        trial.set_user_attr("ray_trial_id", trial_id)
        if "source" not in trial.user_attrs:
            trial.set_user_attr("source", "sampler")
        self.state["numbers"][trial_id] = trial.number
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value, epoch = result.get(METRIC), int(result.get("epoch", 0))
        if trial_id not in self.state["numbers"] or trial_id in self.state["told"] or not _finite(value):
            return
        if epoch > self.state["reported"].get(trial_id, 0):
            self._trial(trial_id).report(float(value), epoch)
            self.state["reported"][trial_id] = epoch

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.state["told"] or trial_id not in self.state["numbers"]:
            return
        if result:  # Ray Tune hands the result that ended a trial to this method alone
            self.on_trial_result(trial_id, result)
        value = (result or {}).get(METRIC)
        if error or not _finite(value):
            state, value = optuna.trial.TrialState.FAIL, None
        elif int(result.get("epoch", 0)) < self.max_epochs:
            state, value = optuna.trial.TrialState.PRUNED, None  # Optuna keeps its last intermediate value
        else:
            state = optuna.trial.TrialState.COMPLETE
        self.study.tell(self.state["numbers"][trial_id], value, state=state)
        self.state["told"][trial_id] = state.name

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.state = pickle.load(f)
        known = set(self.state["numbers"].values())
        for orphan in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if orphan.number not in known:
                self.study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)
        # the study is written at once, the snapshot holding this state every half second: a trial told after the
        # last snapshot is finished in the study, and Ray Tune may still run its last epoch again
        finished = {t.number: t.state.name for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}
        for trial_id, number in self.state["numbers"].items():
            if number in finished:
                self.state["told"].setdefault(trial_id, finished[number])

    def _trial(self, trial_id: str) -> optuna.Trial:
        """The running Optuna trial of a Ray trial, also after a restore (through the storage's public interface)."""
        study_id = self.storage.get_study_id_from_name(self.study_name)
        number = self.state["numbers"][trial_id]
        return optuna.Trial(self.study, self.storage.get_trial_id_from_study_id_trial_number(study_id, number))


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def make_searcher(
    backbones: Sequence[str],
    seed: int,
    trials: int,
    max_epochs: int,
    storage: optuna.storages.BaseStorage | None = None,
    points: Sequence[tuple[str, dict]] = (),
    ranges: Mapping[str, Range] | None = None,
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
            group=True,  # the space is conditional: the deepest freeze depths have no aug_strength
            constant_liar=True,
        )
    return StudySearch(ConditionalSpace(backbones, ranges), max_epochs, points, sampler=sampler, storage=storage)


def trial_sources(storage: str) -> dict[str, str]:
    """Ray trial id -> where its configuration came from, as the study recorded it."""
    study = optuna.load_study(study_name="search", storage=storage)
    return {
        t.user_attrs["ray_trial_id"]: t.user_attrs.get("source", "sampler")
        for t in study.get_trials(deepcopy=False)
        if "ray_trial_id" in t.user_attrs
    }

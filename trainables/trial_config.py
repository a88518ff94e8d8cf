"""The configuration of one trial: a frozen dataclass at the boundary where Ray's dicts come in."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from datasets import UsageError

__all__ = [
    "CASTS",
    "KNOBS",
    "MAX_FREEZE_DEPTH",
    "RECIPE",
    "UNAUGMENTED_DEPTH",
    "Range",
    "TrialConfig",
    "knob",
    "knob_range",
]

MAX_FREEZE_DEPTH = 5
# the search does not augment from this depth on: a probe (the last depth) trains on cached features, and with only
# the last stage training, augmentation did not pay on real photos (val_acc with/without, lite0, 2-4 epochs:
# hymenoptera 0.948/0.941 and 0.928/0.941, sports-a50 0.916/0.920; docs/measurements.md) while the frozen boundary's
# cached activations make such an epoch 2.9x cheaper (trainables.boundary)
UNAUGMENTED_DEPTH = MAX_FREEZE_DEPTH - 1


@dataclass(frozen=True)
class Range:
    """Where the search samples a knob: ``low..high`` (log-uniform when ``log``) or one of ``choices``; a knob
    without a range (the backbone) takes its choices from the command line."""

    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()


def knob(sampled: Range | None, recipe: object = None, default: object = dataclasses.MISSING) -> dataclasses.Field:
    """A field of ``TrialConfig`` and a dimension of the search: its range, and the value the recipes use (None: a
    recipe sets it per kind, probe or whole model)."""
    return dataclasses.field(default=default, metadata={"range": sampled, "recipe": recipe})


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search space, and the space's one declaration: each field's range and recipe value (the
    Optuna distributions, the tables' columns and the recipes are derived from these). Names match the contract's
    table columns."""

    backbone: str = knob(None)
    freeze_depth: int = knob(Range(0, MAX_FREEZE_DEPTH))
    aug_strength: float = knob(Range(0.0, 1.0))
    lr: float = knob(Range(1e-4, 1e-2, log=True))  # the head's; a pretrained backbone's is a tenth (LP-FT)
    weight_decay: float = knob(Range(1e-6, 1e-1, log=True), recipe=1e-4)
    batch_size: int = knob(Range(choices=(16, 32, 64)), recipe=32)
    label_smoothing: float = knob(Range(0.0, 0.2), recipe=0.1)
    dropout: float = knob(Range(0.0, 0.5), recipe=0.1, default=0.0)  # before the new head

    def __post_init__(self) -> None:
        if not 0 <= self.freeze_depth <= MAX_FREEZE_DEPTH:
            raise UsageError(f"freeze_depth must be 0..{MAX_FREEZE_DEPTH}, got {self.freeze_depth}")
        if not 0.0 <= self.aug_strength <= 1.0:
            raise UsageError(f"aug_strength must be within 0..1, got {self.aug_strength}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise UsageError(f"weight_decay cannot be negative, got {self.weight_decay}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"dropout must be within 0..1, got {self.dropout}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UsageError(f"label_smoothing must be within 0..1, got {self.label_smoothing}")

    @classmethod
    def from_dict(cls, config: dict) -> TrialConfig:
        """Build from a Ray/Optuna config dict; unknown or missing keys are errors, not silently dropped."""
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        unknown = sorted(set(config) - set(names))
        missing = sorted(set(required) - set(config))
        if unknown or missing:
            raise UsageError(f"trial config: unknown keys {unknown}, missing keys {missing}; expected {names}")
        return cls(**{f.name: CASTS[f.type](config[f.name]) for f in dataclasses.fields(cls) if f.name in config})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CASTS = {"str": str, "int": int, "float": float}  # a field's annotation (a string: postponed annotations) -> its cast
KNOBS = tuple(f.name for f in dataclasses.fields(TrialConfig))
RECIPE = {f.name: f.metadata["recipe"] for f in dataclasses.fields(TrialConfig) if f.metadata["recipe"] is not None}


def knob_range(name: str) -> Range | None:
    """The range the search samples ``name`` from."""
    return next(f.metadata["range"] for f in dataclasses.fields(TrialConfig) if f.name == name)

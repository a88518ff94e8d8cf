"""The configuration of one trial: a frozen dataclass at the boundary where Ray's dicts come in."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from datasets import UsageError

MAX_FREEZE_DEPTH = 5


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search space; names match the contract's table columns."""

    backbone: str
    freeze_depth: int
    aug_strength: float
    lr: float
    weight_decay: float
    batch_size: int
    label_smoothing: float
    dropout: float = 0.0  # before the new head

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
        return cls(
            backbone=str(config["backbone"]),
            freeze_depth=int(config["freeze_depth"]),
            aug_strength=float(config["aug_strength"]),
            lr=float(config["lr"]),
            weight_decay=float(config["weight_decay"]),
            batch_size=int(config["batch_size"]),
            label_smoothing=float(config["label_smoothing"]),
            dropout=float(config.get("dropout", 0.0)),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

"""Worker side: everything that runs inside a trial.

Names are imported on first use, so that the driver's light modules (the space's declaration in
``trainables.config``, the tables) do not load torch and timm."""

from __future__ import annotations

import importlib

_MODULES = {
    "augment": "trainables.augment",
    "build_model": "trainables.model",
    "evaluate": "trainables.loop",
    "fit": "trainables.training",
    "freeze": "trainables.model",
    "Images": "trainables.loop",
    "knob_range": "trainables.config",
    "KNOBS": "trainables.config",
    "logme": "trainables.logme",
    "lr_at": "trainables.loop",
    "macro_f1": "trainables.loop",
    "MAX_FREEZE_DEPTH": "trainables.config",
    "Preprocess": "trainables.preprocess",
    "preprocessing": "trainables.model",
    "Range": "trainables.config",
    "RECIPE": "trainables.config",
    "retrain": "trainables.trial",
    "Schedule": "trainables.loop",
    "screen_backbone": "trainables.screen",
    "stage_names": "trainables.model",
    "train_epoch": "trainables.loop",
    "train_mode": "trainables.model",
    "train_trial": "trainables.trial",
    "TrialConfig": "trainables.config",
    "TrialSetup": "trainables.setup",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> object:
    if name not in _MODULES:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)

"""Worker side: everything that runs inside a trial.

Names are imported on first use, so that reading a trial's configuration (``trainables.trial_config``, which the
tables use) does not load torch, timm and Ray.
"""

from importlib import import_module

_HOMES = {
    "KNOBS": "trainables.trial_config",
    "MAX_FREEZE_DEPTH": "trainables.trial_config",
    "RECIPE": "trainables.trial_config",
    "UNAUGMENTED_DEPTH": "trainables.trial_config",
    "Images": "trainables.steps",
    "Preprocess": "trainables.preprocess",
    "Range": "trainables.trial_config",
    "Schedule": "trainables.steps",
    "TrialConfig": "trainables.trial_config",
    "TrialSetup": "trainables.setup",
    "augment": "trainables.augmentation",
    "build_model": "trainables.model",
    "evaluate": "trainables.steps",
    "fit": "trainables.training",
    "freeze": "trainables.model",
    "knob_range": "trainables.trial_config",
    "logme": "trainables.transferability",
    "lr_at": "trainables.steps",
    "macro_f1": "trainables.steps",
    "preprocessing": "trainables.model",
    "retrain": "trainables.trial",
    "screen_backbone": "trainables.screening",
    "stage_names": "trainables.model",
    "thread_speedup": "trainables.screening",
    "train_epoch": "trainables.steps",
    "train_mode": "trainables.model",
    "train_trial": "trainables.trial",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}; it has {', '.join(__all__)}")
    return getattr(import_module(_HOMES[name]), name)

"""Worker side: everything that runs inside a trial."""

from trainables.augment import augment
from trainables.config import MAX_FREEZE_DEPTH, TrialConfig
from trainables.loop import Images, evaluate, lr_at, macro_f1
from trainables.model import build_model, freeze, preprocessing, stage_names, train_mode
from trainables.preprocess import Preprocess
from trainables.trial import TrialSetup, fit, retrain, train_trial

__all__ = [
    "MAX_FREEZE_DEPTH",
    "Images",
    "Preprocess",
    "TrialConfig",
    "TrialSetup",
    "augment",
    "build_model",
    "evaluate",
    "fit",
    "freeze",
    "lr_at",
    "macro_f1",
    "preprocessing",
    "retrain",
    "stage_names",
    "train_mode",
    "train_trial",
]

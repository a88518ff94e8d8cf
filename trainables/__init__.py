"""Worker side: everything that runs inside a trial."""

from trainables.augment import augment
from trainables.config import KNOBS, MAX_FREEZE_DEPTH, RECIPE, UNAUGMENTED_DEPTH, Range, TrialConfig, knob_range
from trainables.logme import logme
from trainables.loop import Images, Schedule, evaluate, lr_at, macro_f1, train_epoch
from trainables.model import build_model, freeze, preprocessing, stage_names, train_mode
from trainables.preprocess import Preprocess
from trainables.screen import screen_backbone, thread_speedup
from trainables.setup import TrialSetup
from trainables.training import fit
from trainables.trial import retrain, train_trial

__all__ = [
    "KNOBS",
    "MAX_FREEZE_DEPTH",
    "UNAUGMENTED_DEPTH",
    "RECIPE",
    "Range",
    "Images",
    "Preprocess",
    "Schedule",
    "TrialConfig",
    "TrialSetup",
    "augment",
    "build_model",
    "evaluate",
    "fit",
    "freeze",
    "knob_range",
    "logme",
    "lr_at",
    "macro_f1",
    "preprocessing",
    "retrain",
    "screen_backbone",
    "stage_names",
    "thread_speedup",
    "train_epoch",
    "train_mode",
    "train_trial",
]

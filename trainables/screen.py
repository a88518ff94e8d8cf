"""Before the search: each backbone's frozen features, the probe head fitted on them, and how well the backbone
will transfer (LogME), so that the search can order and prescreen backbones before training any."""

from __future__ import annotations

import time

import torch

from trainables.accel import Accel
from trainables.logme import logme
from trainables.model import build_model, preprocessing
from trainables.probe import evaluate_features, load_head, probe_head, split_features, weights_key
from trainables.setup import TrialSetup, device
from trainables.training import head_path

__all__ = ["screen_backbone"]


def screen_backbone(backbone: str, setup: TrialSetup) -> dict:
    """One frozen forward pass over train and val (cached for the trials), the train split's LogME score, and the
    fitted probe head's validation accuracy."""
    started = time.perf_counter()
    torch.set_num_threads(max(1, setup.cpus))
    dev = device()
    data = setup.local_data()
    num_classes = len(data.classes)
    # as every trial seeds it: a randomly initialised backbone is the trials' one, so the same seed ranks the same
    torch.manual_seed(setup.seed)
    model = Accel.for_device(dev).model(build_model(backbone, num_classes, setup.pretrained(backbone)))
    prep = preprocessing(model, data.image_size)
    key = weights_key(model, backbone)
    (_, train_y), (_, val_y) = data.load("train"), data.load("val")
    train_x, val_x = (split_features(model, data, s, key, prep, dev) for s in ("train", "val"))
    score = logme(train_x, train_y)
    load_head(model.get_classifier(), probe_head(train_x, train_y, num_classes, head_path(data, key, ("train",))))
    probe = evaluate_features(model.get_classifier(), val_x, val_y, num_classes, dev)
    return {
        "backbone": backbone,
        "logme": score,
        "probe_val_acc": probe["acc"],
        "feature_dim": int(train_x.shape[1]),
        "screen_s": time.perf_counter() - started,
    }

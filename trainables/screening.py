"""Before the search: each backbone's frozen features, the probe head fitted on them, and how well the backbone
will transfer (LogME), so that the search can order and prescreen backbones before training any; and what the
time budget plans with: each backbone's forward speed and head-fit time, and the retrain's speed-up over a trial."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from trainables.accel import Accel
from trainables.model import build_model, preprocessing
from trainables.probe import HEAD_FITS, evaluate_features, fit_head, load_head, probe_head, split_features, weights_key
from trainables.setup import TrialSetup, device
from trainables.training import head_path
from trainables.transferability import logme

__all__ = ["screen_backbone", "thread_speedup"]

TIMED_IMAGES = 16  # a forward pass timed on its own when the features came from an earlier run's cache


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
    (_, train_y), (val_images, val_y) = data.load("train"), data.load("val")
    fresh = not (data.path / "features" / key / "train.npy").is_file()
    forward = time.perf_counter()
    train_x, val_x = (split_features(model, data, s, key, prep, dev) for s in ("train", "val"))
    forward = (time.perf_counter() - forward) / (len(train_y) + len(val_y))
    if not fresh:
        forward = _forward_s(model, val_images[:TIMED_IMAGES], prep, dev)
    score = logme(train_x, train_y)
    head = probe_head(train_x, train_y, num_classes, head_path(data, key, ("train",)), setup.seed)
    load_head(model.get_classifier(), head)
    probe = evaluate_features(model.get_classifier(), val_x, val_y, num_classes, dev)
    fitting = time.perf_counter()  # one fit timed even when the head came from the cache: what a retrain's costs
    fit_head(train_x, train_y, num_classes, float(head["l2"]))
    fitting = time.perf_counter() - fitting
    return {
        "backbone": backbone,
        "logme": score,
        "probe_val_acc": probe["acc"],
        "feature_dim": int(train_x.shape[1]),
        "screen_s": time.perf_counter() - started,
        "forward_s": forward,  # per image, at ``threads``
        "head_s": fitting * HEAD_FITS,  # choosing the penalty and fitting
        "threads": setup.cpus,
    }


@torch.no_grad()
def _forward_s(model: torch.nn.Module, images: np.ndarray, prep, dev: torch.device) -> float:
    """Seconds per image of the frozen forward pass, timed after one warm-up pass."""
    x = prep(_batch(images, dev))
    model.eval()
    model(x[:2])
    started = time.perf_counter()
    model(x)
    return (time.perf_counter() - started) / len(x)


def _batch(images: np.ndarray, dev: torch.device) -> torch.Tensor:
    """Stored images ``[B, H, W, 3]`` as the trials see them: float on the device, in its layout."""
    return Accel.for_device(dev).batch(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))


def thread_speedup(backbone: str, setup: TrialSetup, trial_threads: int, images: int = 8) -> float:
    """How much faster a training step runs at this task's threads (``setup.cpus``, the retrain's) than at a trial's:
    measured, because on this 2-core machine 2 threads gave 1.36-1.76x, not 2x (docs/measurements.md)."""
    dev = device()
    data = setup.local_data()
    model = Accel.for_device(dev).model(build_model(backbone, len(data.classes), setup.pretrained(backbone)))
    prep = preprocessing(model, data.image_size)
    x_all, y_all = data.load("train")
    x = prep(_batch(x_all[:images], dev))
    y = torch.from_numpy(y_all[:images]).to(dev)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)

    def step_s(threads: int) -> float:
        torch.set_num_threads(threads)
        best = float("inf")
        for _ in range(2):  # the faster of two: the first also warms the allocator
            started = time.perf_counter()
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            best = min(best, time.perf_counter() - started)
        return best

    slow, fast = step_s(trial_threads), step_s(max(1, setup.cpus))
    return max(1.0, slow / fast)

"""The steps of training: batches, the learning-rate schedule, one epoch of optimiser steps, evaluation."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.accel import Accel
from trainables.model import train_mode
from trainables.preprocess import Preprocess

__all__ = [
    "Images",
    "OnDevice",
    "Schedule",
    "batches",
    "classification_metrics",
    "epoch_size",
    "evaluate",
    "lr_at",
    "macro_f1",
    "steps_per_epoch",
    "train_epoch",
]


class Images:
    """Several memory-mapped arrays ``[N, H, W, C]`` seen as one (decoded photos, or the activations at a frozen
    boundary); reading a batch copies only that batch."""

    def __init__(self, parts: Sequence[tuple[np.ndarray, np.ndarray]]):
        self.parts = [x for x, _ in parts]
        self.labels = np.concatenate([y for _, y in parts]) if parts else np.zeros(0, np.int64)
        self.offsets = np.cumsum([0] + [len(x) for x in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows in ``idx`` order as ``[B, C, H, W]`` (channels-last in memory, as stored) and int64 labels;
        ``Accel.batch`` puts them on the device (photos as float)."""
        idx = np.asarray(idx)
        out = np.empty((len(idx), *self.parts[0].shape[1:]), dtype=self.parts[0].dtype)
        for k, x in enumerate(self.parts):
            lo, hi = self.offsets[k], self.offsets[k + 1]
            sel = np.flatnonzero((idx >= lo) & (idx < hi))
            if len(sel):
                local = idx[sel] - lo
                order = np.argsort(local)  # memmaps read fastest in ascending order
                out[sel[order]] = x[local[order]]
        return torch.from_numpy(out).permute(0, 3, 1, 2), torch.from_numpy(self.labels[idx])


def batches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index batches over ``n`` items, shuffled when ``rng`` is given; a last batch of one is dropped in training
    because BatchNorm cannot train on it."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        chunk = order[start : start + batch_size]
        if rng is not None and len(chunk) < 2:
            continue
        yield chunk


def steps_per_epoch(n: int, batch_size: int) -> int:
    """How many batches ``batches`` yields in training (a last batch of one is dropped)."""
    return n // batch_size + (1 if n % batch_size >= 2 else 0)


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to zero at ``total_steps``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


PROGRESSIVE_START = 0.8  # of the side at epoch 0; 0.6 cost 5 points at rung 1 (benchmarks/progressive.py)


def epoch_size(size: int, epoch: int, epochs: int) -> int:
    """Progressive resizing (``TrialSetup.progressive``): the side a fine-tuning epoch trains at. The first epochs,
    which decide ASHA's first rungs, train smaller (``PROGRESSIVE_START`` of the side at epoch 0, full from the middle
    of the schedule on); evaluation stays at ``size``. Multiples of 16, at least 32 px."""
    scale = min(1.0, PROGRESSIVE_START + 2 * (1 - PROGRESSIVE_START) * epoch / max(1, epochs))
    return size if scale >= 1.0 else min(size, max(32, round(size * scale / 16) * 16))


def macro_f1(confusion: np.ndarray) -> float:
    """Mean F1 over classes from a confusion matrix (rows: truth, columns: prediction)."""
    tp = np.diag(confusion).astype(np.float64)
    denom = confusion.sum(0) + confusion.sum(1)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = confusion.sum(1) > 0
    return float(f1[present].mean()) if present.any() else 0.0


@dataclass(frozen=True)
class OnDevice:
    """Inputs and labels already on the model's device (a probe's cached features): a batch is a view by index."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[idx], self.labels[idx]


@dataclass(frozen=True)
class Schedule:
    """What fixes every epoch's batches and learning rates: the batch order is a function of (seed, epoch), the
    learning rate of the step, so an epoch rerun after a restore is the same epoch."""

    batch_size: int
    base_lr: float
    steps_per_epoch: int
    epochs: int
    seed: int = 0
    label_smoothing: float = 0.0

    @classmethod
    def of(cls, n: int, batch_size: int, base_lr: float, epochs: int, seed: int, label_smoothing: float) -> Schedule:
        return cls(batch_size, base_lr, steps_per_epoch(n, batch_size), epochs, seed, label_smoothing)

    def order(self, n: int, epoch: int) -> Iterator[np.ndarray]:
        return batches(n, self.batch_size, np.random.default_rng([self.seed, epoch]))


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Images | OnDevice,
    epoch: int,
    schedule: Schedule,
    *,
    accel: Accel,
    aug_strength: float = 0.0,
    prep: Preprocess | None = None,
    keep_statistics: bool = False,
    size: int | None = None,
) -> tuple[float, int, float]:
    """One pass over ``data`` in the (seed, epoch) order, for every model a trial trains (the whole model, the
    stages after a frozen boundary, a probe's head): the step's learning rate, the forward pass in ``accel``'s
    precision, its one backward path; returns (mean loss, images seen, seconds).

    With ``prep`` the inputs are photos, augmented on the device from (seed, epoch) in float32 and trained at
    ``size`` when smaller than the view; without, they are the model's inputs as they are. ``keep_statistics``
    keeps every BatchNorm layer's running statistics (``train_mode``). The loss is summed on the device and checked
    once, at the end of the epoch: a check per step would wait for the device at every step."""
    if prep is None and aug_strength > 0:
        raise ValueError(f"aug_strength {aug_strength} needs photos to augment, not activations; pass prep")
    train_mode(model, keep_statistics)
    gen = torch.Generator().manual_seed(schedule.seed * 100_003 + epoch)
    total_steps = schedule.steps_per_epoch * schedule.epochs
    warmup = max(1, total_steps // 20)
    step = epoch * schedule.steps_per_epoch
    total = torch.zeros((), dtype=torch.float64, device=accel.device)
    seen, start = 0, time.perf_counter()
    for idx in schedule.order(len(data), epoch):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, schedule.base_lr, warmup) * group.get("lr_scale", 1.0)
        x, y = data.batch(idx)
        x, y = accel.batch(x), y.to(accel.device, non_blocking=True)
        if prep is not None:
            x = prep.train_view(x, aug_strength, gen)
            if size is not None and size < x.shape[-1]:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            x = prep.normalize(x)
        with accel.autocast():
            loss = F.cross_entropy(model(x), y, label_smoothing=schedule.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        accel.backward_step(loss, optimizer)
        total += loss.detach().double() * len(idx)
        seen += len(idx)
        step += 1
    mean = total.item() / max(1, seen)
    if not math.isfinite(mean):
        raise FloatingPointError(
            f"loss became {mean} in epoch {epoch + 1}; lower the learning rate (lr={schedule.base_lr:g})"
        )
    return mean, seen, time.perf_counter() - start


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Loss, accuracy, macro-F1, the confusion matrix (rows: truth) and the class probabilities of CPU logits against
    labels."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels.numpy(), logits.argmax(1).numpy()), 1)
    n = max(1, len(labels))
    return {
        "loss": F.cross_entropy(logits, labels, reduction="sum").item() / n,
        "acc": float(np.trace(confusion) / n),
        "macro_f1": macro_f1(confusion),
        "confusion": confusion,
        "probs": logits.float().softmax(1).numpy(),
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Images,
    num_classes: int,
    prep: Preprocess | None,
    batch_size: int = 128,
    accel: Accel | None = None,
) -> dict:
    """Loss, accuracy, macro-F1 and the confusion matrix on ``data`` (on the CPU unless ``accel`` says otherwise);
    without ``prep`` the data are the model's inputs as they are."""
    model.eval()
    accel = accel or Accel.for_device(torch.device("cpu"))
    logits = []
    for idx in batches(len(data), batch_size):
        x = accel.batch(data.batch(idx)[0])
        x = prep(x) if prep is not None else x
        with accel.autocast():
            logits.append(model(x).float().cpu())
    return classification_metrics(torch.cat(logits), torch.from_numpy(data.labels), num_classes)

"""The linear probe's shortcut: at the last freeze depth without augmentation the backbone's output never changes,
so its features are computed once per (backbone weights, data) and every epoch trains the head on them.

Features live beside the decoded images (``CACHE/features/KEY/SPLIT.npy``), so the trials of one search, each in
its own process, compute them once between them.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasets import DataCache
from trainables.accel import to_unit
from trainables.loop import Images, batches, classification_metrics, optimise
from trainables.preprocess import Preprocess


def weights_key(model: nn.Module, backbone: str) -> str:
    """Identifies the frozen backbone: its name and every non-head tensor's bytes."""
    h = hashlib.sha1(backbone.encode())
    classifier = model.get_classifier()
    head = {id(p) for p in classifier.parameters()}
    for p in model.parameters():
        if id(p) not in head:
            h.update(p.detach().cpu().numpy().tobytes())
    for name, b in model.named_buffers():
        h.update(name.encode() + b.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def split_features(
    model: nn.Module,
    data: DataCache,
    split: str,
    key: str,
    prep: Preprocess,
    device: torch.device,
    batch_size: int = 128,
) -> np.ndarray:
    """Pooled pre-logit features ``[N, D]`` of one split, computed on the first call and read back after."""
    path = data.path / "features" / key / f"{split}.npy"
    if path.is_file():
        return np.load(path)
    model.eval()
    images = Images([data.load(split)])
    parts = []
    for idx in batches(len(images), batch_size):
        x, _ = images.batch(idx)
        x = prep(to_unit(x.to(device)))
        parts.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu().numpy())
    features = np.concatenate(parts).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{split}.{os.getpid()}.npy")
    np.save(tmp, features)
    os.replace(tmp, path)  # trials racing for the same key write the same numbers
    return features


def probe_epoch(
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    dropout: float,
    label_smoothing: float,
    seed: int,
    epoch: int,
    step: int,
    total_steps: int,
    base_lr: float,
    device: torch.device,
) -> tuple[float, int, float]:
    """One epoch of the head alone on cached features; same batches and schedule as a full epoch."""
    head.train()
    x_all, y_all = torch.from_numpy(features).to(device), torch.from_numpy(labels).to(device)

    def loss_of(idx: np.ndarray) -> torch.Tensor:
        x = F.dropout(x_all[idx], dropout, training=True)
        return F.cross_entropy(head(x), y_all[idx], label_smoothing=label_smoothing)

    order = batches(len(features), batch_size, np.random.default_rng([seed, epoch]))
    return optimise(optimizer, order, loss_of, epoch=epoch, step=step, total_steps=total_steps, base_lr=base_lr)


@torch.no_grad()
def evaluate_features(
    head: nn.Module, features: np.ndarray, labels: np.ndarray, num_classes: int, device: torch.device
) -> dict:
    head.eval()
    logits = head(torch.from_numpy(features).to(device)).float().cpu()
    return classification_metrics(logits, torch.from_numpy(labels), num_classes)

"""The frozen backbone's features, computed once per (backbone weights, data) and shared by every trial of a search:
linear-probe trials train their head on them, and fine-tuning trials start from a head fitted on them (LP-FT).

Features and fitted heads live beside the decoded images (``CACHE/features/KEY/``), so the trials of one search,
each in its own process, compute them once between them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from datasets import DataCache, atomic_write
from trainables.accel import Accel
from trainables.preprocess import Preprocess
from trainables.steps import Images, batches, classification_metrics

__all__ = [
    "HEAD_FITS",
    "HEAD_ITERATIONS",
    "L2_GRID",
    "choose_l2",
    "evaluate_features",
    "fit_head",
    "load_head",
    "probe_head",
    "read_checked",
    "split_features",
    "weights_key",
    "write_checked",
]

log = logging.getLogger(__name__)
# L2 on standardised features, chosen per backbone and data by k-fold on the training split, not fixed: on sports-a50
# the chosen one's probe stayed within one photo of a fixed 1e-3's (docs/measurements.md)
L2_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
FOLDS = 3
HEAD_ITERATIONS = 100
# what choosing and fitting a head costs, in whole fits: one, and each fold's at half the iterations on 2/3 the images
HEAD_FITS = 1 + len(L2_GRID) * (FOLDS - 1) / 2
T = TypeVar("T")


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


def write_checked(path: Path, write: Callable[[Path], None]) -> None:
    """Write the file, then its SHA-256 beside it (``NAME.sha256``): a file without a matching one is not trusted."""
    digest: list[str] = []

    def written(tmp: Path) -> None:
        write(tmp)
        digest.append(hashlib.sha256(tmp.read_bytes()).hexdigest())

    atomic_write(path, written)  # trials racing for the same key write the same numbers
    atomic_write(_digest_file(path), lambda p: p.write_text(digest[0]))


def _digest_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_checked(path: Path, load: Callable[[Path], T], whole: Callable[[T], bool]) -> T | None:
    """What an earlier trial cached at ``path``, or None when it is not there or is damaged (then it is computed
    again and replaced, with one log line)."""
    if not path.is_file():
        return None
    try:
        if hashlib.sha256(path.read_bytes()).hexdigest() != _digest_file(path).read_text().strip():
            raise ValueError("its SHA-256 is not the one written with it")
        value = load(path)
        if whole(value):
            return value
        reason = "not the shape this data and backbone give"
    except Exception as e:  # any reader's error (numpy, safetensors, a missing digest) means the same: damaged
        reason = f"{type(e).__name__}: {e}"
    log.warning("the cached %s is damaged (%s); computing it again", path, reason)
    return None


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
    if (features := read_checked(path, np.load, lambda f: f.ndim == 2 and len(f) == data.sizes[split])) is not None:
        return features
    model.eval()
    images = Images([data.load(split)])
    accel = Accel.for_device(device)
    parts = []
    for idx in batches(len(images), batch_size):
        x = prep(accel.batch(images.batch(idx)[0]))
        parts.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu().numpy())
    features = np.concatenate(parts).astype(np.float32)
    write_checked(path, lambda p: np.save(p, features))
    return features


def fit_head(
    features: np.ndarray, labels: np.ndarray, num_classes: int, l2: float, iterations: int = HEAD_ITERATIONS
) -> dict[str, torch.Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS on standardised features, L2-regularised; returned as
    ``weight [C, D]`` and ``bias [C]`` of a linear layer on the raw features."""
    x = torch.from_numpy(np.asarray(features, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y) + l2 / 2 * (w**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    w, b = w.detach(), b.detach()
    return {"weight": (w / std).float(), "bias": (b - (w * mean / std).sum(1)).float()}


def choose_l2(features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0) -> float:
    """The ``L2_GRID`` value whose heads score best on held-out folds of ``features`` (accuracy, then log-loss; the
    stronger penalty on a tie): seconds on cached features, and no look at the validation split."""
    folds = np.random.default_rng(seed).permutation(len(labels)) % FOLDS
    if len(labels) < 2 * FOLDS:
        return L2_GRID[len(L2_GRID) // 2]
    scores = []
    for l2 in L2_GRID:
        right, loss = 0, 0.0
        for k in range(FOLDS):
            train, held = folds != k, folds == k
            head = fit_head(features[train], labels[train], num_classes, l2, iterations=HEAD_ITERATIONS // 2)
            logits = torch.from_numpy(features[held]).float() @ head["weight"].T + head["bias"]
            target = torch.from_numpy(labels[held]).long()
            right += int((logits.argmax(1) == target).sum())
            loss += float(F.cross_entropy(logits, target, reduction="sum"))
        scores.append((right, -loss, l2))
    return max(scores)[2]


def probe_head(
    features: np.ndarray, labels: np.ndarray, num_classes: int, path: Path, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The head fitted on ``features`` at the L2 ``choose_l2`` picks (kept as ``l2`` beside the weights): read from
    ``path``, or fitted once and written there."""
    shapes = {"weight": (num_classes, features.shape[1]), "bias": (num_classes,), "l2": (1,)}
    read = read_checked(
        path, lambda p: load_file(str(p)), lambda h: {k: tuple(v.shape) for k, v in h.items()} == shapes
    )
    if read is not None:
        return read
    l2 = choose_l2(features, labels, num_classes, seed)
    head = {**fit_head(features, labels, num_classes, l2), "l2": torch.tensor([l2])}
    write_checked(path, lambda p: save_file(head, str(p)))
    log.info(
        "fitted the probe head %s on %d images (L2 %g, chosen by %d-fold)", path.parent.name, len(labels), l2, FOLDS
    )
    return head


def load_head(classifier: nn.Module, head: dict[str, torch.Tensor]) -> None:
    """Put a fitted head into the model's classifier (a linear layer, as timm's CNNs have)."""
    if not isinstance(classifier, nn.Linear):
        raise ValueError(f"the probe head fits a linear classifier, not {type(classifier).__name__}")
    with torch.no_grad():
        classifier.weight.copy_(head["weight"])
        classifier.bias.copy_(head["bias"])


@torch.no_grad()
def evaluate_features(
    head: nn.Module, features: np.ndarray, labels: np.ndarray, num_classes: int, device: torch.device
) -> dict:
    head.eval()
    logits = head(torch.from_numpy(features).to(device)).float().cpu()
    return classification_metrics(logits, torch.from_numpy(labels), num_classes)

"""The frozen boundary: the stem and the first ``freeze_depth`` stages of a fine-tuning trial never change (their
BatchNorm layers keep their running statistics), so what they compute for a photo is the same in every epoch and in
every trial of the same weights. It is computed once per (weights, depth, split), cached beside the features
(``CACHE/features/KEY/depthD-SPLIT.npy``), and the model then runs only the stages that train: in every validation
pass, and in the training steps of a trial without augmentation (augmented photos differ in every epoch)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from datasets import DataCache
from trainables.accel import Accel
from trainables.model import stage_names
from trainables.preprocess import Preprocess
from trainables.probe import read_checked, weights_key, write_checked
from trainables.steps import Images, batches

__all__ = ["BOUNDARY_BYTES", "Boundary", "frozen_boundary", "prefix_forward", "stages_after"]

log = logging.getLogger(__name__)
# a split whose activations would take more is not cached (they are read from disk per batch, but built in memory)
BOUNDARY_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Boundary:
    """The activations at the frozen boundary of ``depth``: of the training splits (None: the trial trains on
    photos) and of the validation split (None: it is evaluated on photos)."""

    depth: int
    train: Images | None
    val: Images | None


def _prefix_modules(model: nn.Module, depth: int) -> list[tuple[nn.Module, str]]:
    """(parent, name) of the outermost modules wholly inside the frozen prefix (the modules ``freeze`` freezes)."""
    names = [name for name, _ in model.named_modules()]
    stage = stage_names(model)[depth - 1]
    end = max(i for i, name in enumerate(names) if name == stage or name.startswith(stage + "."))

    def last(i: int) -> int:  # the index of the last module in names[i]'s subtree (named_modules is depth-first)
        j = i
        while j + 1 < len(names) and names[j + 1].startswith(names[i] + "."):
            j += 1
        return j

    inside = {names[i] for i in range(1, end + 1) if last(i) <= end}
    modules = dict(model.named_modules())
    outermost = [name for name in names if name in inside and name.rpartition(".")[0] not in inside]
    return [(modules[name.rpartition(".")[0]], name.rpartition(".")[2]) for name in outermost]


@contextlib.contextmanager
def stages_after(model: nn.Module, depth: int) -> Iterator[nn.Module]:
    """The model whose forward takes the frozen boundary's activations: the prefix's modules are identities."""
    swapped = [(parent, name, parent._modules[name]) for parent, name in _prefix_modules(model, depth)]
    for parent, name, _ in swapped:
        parent._modules[name] = nn.Identity()
    try:
        yield model
    finally:
        for parent, name, module in swapped:
            parent._modules[name] = module


class _Reached(Exception):
    pass


def prefix_forward(model: nn.Module, depth: int, x: torch.Tensor) -> torch.Tensor:
    """The frozen prefix's output for inputs ``x`` (the rest of the model is not run)."""
    stage = dict(model.named_modules())[stage_names(model)[depth - 1]]
    out: list[torch.Tensor] = []

    def reached(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        out.append(output)
        raise _Reached

    handle = stage.register_forward_hook(reached)
    try:
        model(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    return out[0]


@torch.no_grad()
def frozen_boundary(
    model: nn.Module,
    backbone: str,
    depth: int,
    data: DataCache,
    train_splits: Sequence[str],
    val_split: str | None,
    prep: Preprocess,
    accel: Accel,
) -> Boundary | None:
    """The boundary's activations of ``train_splits`` (all or none) and ``val_split``, or None where the model's
    stages do not chain (checked on two photos against the whole model) or nothing asked for fits
    ``BOUNDARY_BYTES``."""
    first = train_splits[0] if train_splits else val_split
    if first is None:
        return None
    model.eval()
    with accel.autocast():
        sample = prep(accel.batch(Images([data.load(first)]).batch(np.arange(min(2, data.sizes[first])))[0]))
        whole = model(sample).float()
        inside = prefix_forward(model, depth, sample)
        with stages_after(model, depth):
            split = model(inside).float()
    if split.shape != whole.shape or not torch.allclose(split, whole, rtol=1e-3, atol=1e-3):
        log.info("%s's stages do not chain at freeze depth %d: its trials run the whole model", backbone, depth)
        return None
    per_image = inside[0].numel() * 4
    fits = [s for s in (*train_splits, val_split) if s is not None and data.sizes[s] * per_image <= BOUNDARY_BYTES]
    key = weights_key(model, backbone)

    def activations(splits: Sequence[str]) -> Images | None:
        if not splits or not set(splits) <= set(fits):
            return None
        return Images([(_split_activations(model, depth, data, s, key, prep, accel), data.load(s)[1]) for s in splits])

    boundary = Boundary(depth, activations(train_splits), activations([val_split] if val_split else []))
    return boundary if boundary.train is not None or boundary.val is not None else None


def _split_activations(
    model: nn.Module, depth: int, data: DataCache, split: str, key: str, prep: Preprocess, accel: Accel
) -> np.ndarray:
    """``[N, H, W, C]`` float32 (channels-last, as the model runs on the CPU), computed on the first call and read
    back (memory-mapped) after."""
    path = data.path / "features" / key / f"depth{depth}-{split}.npy"
    n = data.sizes[split]
    read = read_checked(path, lambda p: np.load(p, mmap_mode="r"), lambda a: a.ndim == 4 and len(a) == n)
    if read is not None:
        return read
    images = Images([data.load(split)])
    parts = []
    for idx in batches(len(images), 64):
        with accel.autocast():
            inside = prefix_forward(model, depth, prep(accel.batch(images.batch(idx)[0])))
        parts.append(inside.float().permute(0, 2, 3, 1).cpu().numpy())
    activations = np.ascontiguousarray(np.concatenate(parts))
    write_checked(path, lambda p: np.save(p, activations))
    return activations

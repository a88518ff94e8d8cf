"""More than one trained model: weight soups (Wortsman et al. 2022), greedy ensemble selection (Caruana et al.
2004) and horizontal-flip test-time augmentation, all judged by their probabilities on a split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from ray import tune
from torch import nn

from trainables.accel import Accel
from trainables.checkpoint import load_checkpoint
from trainables.model import build_model, preprocessing
from trainables.preprocess import Preprocess
from trainables.setup import TrialSetup, device
from trainables.steps import Images, batches, classification_metrics

VAL_PROBS_FILE = "val_probs.npy"  # in each trial checkpoint: the validation probabilities of the weights it holds

__all__ = [
    "FlipAverage",
    "average_weights",
    "VAL_PROBS_FILE",
    "checkpoint_probs",
    "checkpoint_weights",
    "flipped_probabilities",
    "greedy_ensemble",
    "greedy_soup",
    "metrics_of",
    "probabilities",
    "select_variants",
    "split_probabilities",
]

EPS = 1e-12  # probabilities as logits: log(p) of a class no model gives any weight


def average_weights(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of state dicts of one architecture, key by key, in float32 and back to each tensor's dtype; counters
    (BatchNorm's ``num_batches_tracked``) are not weights and keep the first's value."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = torch.stack([s[key].float() for s in states]).mean(0).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


class FlipAverage(nn.Module):
    """A model with horizontal-flip test-time augmentation: the log of its two views' mean probabilities (a valid
    logit: its softmax is that mean)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = torch.stack([self.model(x).float().softmax(1), self.model(x.flip(-1)).float().softmax(1)])
        return views.mean(0).clamp_min(EPS).log()


@torch.no_grad()
def probabilities(
    model: nn.Module, data: Images, prep: Preprocess, tta: bool = False, accel: Accel | None = None
) -> np.ndarray:
    """Class probabilities ``[N, C]`` of ``data`` (float64); with ``tta`` the mean of the image's and its mirror's."""
    model.eval()
    accel = accel or Accel.for_device(torch.device("cpu"))
    net = FlipAverage(model) if tta else model
    out = []
    for idx in batches(len(data), 128):
        with accel.autocast():
            out.append(net(prep(accel.batch(data.batch(idx)[0]))).float().softmax(1).cpu().double())
    return torch.cat(out).numpy()


def metrics_of(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Loss (of the mean probabilities), accuracy, macro-F1 and the confusion matrix."""
    logits = torch.from_numpy(np.log(np.clip(probs, EPS, None)))
    return classification_metrics(logits, torch.from_numpy(labels).long(), num_classes)


def greedy_soup(
    candidates: Sequence[tuple[str, dict[str, torch.Tensor]]], accuracy: Callable[[dict[str, torch.Tensor]], float]
) -> tuple[list[str], float, dict[str, torch.Tensor]]:
    """Wortsman et al.'s greedy soup: in the given order (best first), a candidate joins when the average of the
    soup and it scores no lower on ``accuracy``; returns the members' names, the soup's score and its weights."""
    (name, state), rest = candidates[0], candidates[1:]
    members, states, score, soup = [name], [state], accuracy(state), state
    for name, state in rest:
        trial = average_weights([*states, state])
        value = accuracy(trial)
        if value >= score:
            members, states, score, soup = [*members, name], [*states, state], value, trial
    return members, score, soup


def greedy_ensemble(probs: dict[str, np.ndarray], labels: np.ndarray, size: int) -> tuple[dict[str, int], float]:
    """Caruana et al.'s ensemble selection with replacement: ``size`` times, add the candidate whose addition gives the
    highest accuracy of the averaged probabilities (ties: the lower loss, then the earlier candidate); keep the
    best prefix (the shorter on a tie). Returns each member's count (its weight) and the ensemble's accuracy."""
    picked: list[str] = []
    total = np.zeros_like(next(iter(probs.values())))
    best = (-1.0, 0)
    for step in range(1, size + 1):
        # max keeps the first of equals: the candidates come best first
        name = max(probs, key=lambda n: _accuracy_and_fit((total + probs[n]) / step, labels))
        picked.append(name)
        total = total + probs[name]
        accuracy = _accuracy_and_fit(total / step, labels)[0]
        if accuracy > best[0]:
            best = (accuracy, step)
    return dict(Counter(picked[: best[1]])), best[0]


def _accuracy_and_fit(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Accuracy, then the negative log-loss: what ensemble selection maximises, in that order."""
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, None)).mean()
    return float((probs.argmax(1) == labels).mean()), float(-nll)


def select_variants(
    setup: TrialSetup,
    candidates: Sequence[tuple[str, str, tune.Checkpoint]],
    soup: int,
    ensemble: int,
) -> dict:
    """On validation, from ``candidates`` (trial id, backbone, newest checkpoint; best first): each one's
    probabilities (saved in its checkpoint, else computed) and accuracy, the greedy soup of the first ``soup`` that
    share the first's backbone (none for 0), and an ensemble of up to ``ensemble`` members (none for 0)."""
    labels = setup.local_data().load("val")[1]
    weights = {trial: checkpoint_weights(ckpt) for trial, _, ckpt in candidates} if soup else {}
    probs = {}
    for trial, backbone, ckpt in candidates:
        probs[trial] = checkpoint_probs(ckpt)
        if probs[trial] is None or probs[trial].shape[0] != len(labels):
            state = weights.get(trial) or checkpoint_weights(ckpt)
            probs[trial] = split_probabilities(backbone, state, setup, "val")
    out: dict = {"val_acc": {t: _accuracy_and_fit(p, labels)[0] for t, p in probs.items()}, "probs": probs}
    if soup:
        first = candidates[0][1]
        pool = [(t, weights[t]) for t, b, _ in candidates if b == first][:soup]
        known = {id(weights[t]): out["val_acc"][t] for t, _ in pool}  # a candidate alone was just evaluated

        def accuracy_of(state: dict[str, torch.Tensor]) -> float:
            if id(state) in known:
                return known[id(state)]
            return _accuracy_and_fit(split_probabilities(first, state, setup, "val"), labels)[0]

        members, accuracy, _ = greedy_soup(pool, accuracy_of)
        out["soup"] = {"members": members, "val_acc": accuracy}
    if ensemble:
        members, accuracy = greedy_ensemble(probs, labels, ensemble)
        out["ensemble"] = {"members": members, "val_acc": accuracy}
    return out


def checkpoint_probs(checkpoint: tune.Checkpoint) -> np.ndarray | None:
    """The validation probabilities a trial saved with its checkpoint (None for a checkpoint without them)."""
    with checkpoint.as_directory() as directory:
        path = Path(directory) / VAL_PROBS_FILE
        return np.load(path).astype(np.float64) if path.is_file() else None


def flipped_probabilities(setup: TrialSetup, members: Sequence[tuple[str, str, tune.Checkpoint]]) -> dict:
    """Each member's validation probabilities with test-time augmentation (the mean of each image's and its
    mirror's), from its newest checkpoint: what deciding on ``--tta`` needs."""
    return {t: split_probabilities(b, checkpoint_weights(c), setup, "val", tta=True) for t, b, c in members}


def checkpoint_weights(checkpoint: tune.Checkpoint) -> dict[str, torch.Tensor]:
    """A trial's model weights from its Ray Tune checkpoint (local or on remote storage)."""
    with checkpoint.as_directory() as directory:
        return load_checkpoint(directory)["model"]


def split_probabilities(
    backbone: str, state: dict[str, torch.Tensor], setup: TrialSetup, split: str, tta: bool = False
) -> np.ndarray:
    """``state``'s probabilities on one of the cache's splits, on this worker's device."""
    data = setup.local_data()
    model = build_model(backbone, len(data.classes))
    model.load_state_dict(state)
    accel = Accel.for_device(device())
    prep = preprocessing(model, data.image_size)
    return probabilities(accel.model(model), Images([data.load(split)]), prep, tta, accel)

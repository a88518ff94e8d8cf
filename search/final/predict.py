"""``python -m search predict TASK IMAGE...``: classify images with a task's retrained model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import load_file
from torch import nn

from datasets import UsageError, decode, decoded_size, reading
from search.final.model_dir import MANIFEST
from trainables import Preprocess
from trainables.combine import EPS, FlipAverage

__all__ = ["Ensemble", "SavedModel", "predict_lines"]


IDENTITY = Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=1.0)  # the ensemble preprocesses inside


class Ensemble(nn.Module):
    """Members that each take their own view of the stored image (their crop and normalisation) and their weight;
    the output is the log of the weighted mean of their probabilities (a logit: its softmax is that mean)."""

    def __init__(self, members: list[tuple[nn.Module, Preprocess]], weights: list[float]):
        super().__init__()
        self.members = nn.ModuleList(m for m, _ in members)
        self.preps = [p for _, p in members]
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32) / sum(weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = [m(p(x)).float().softmax(1) for m, p in zip(self.members, self.preps, strict=True)]
        return torch.einsum("m,mbc->bc", self.weights, torch.stack(probs)).clamp_min(EPS).log()


@dataclass
class SavedModel:
    """A retrained model folder loaded with timm and safetensors: the network (with test-time augmentation inside
    when it was asked for; an ``Ensemble`` for an ensemble's folder), its inputs, its class names. ``prep`` turns a
    stored image into the network's input, of ``input_size`` px."""

    model: torch.nn.Module
    prep: Preprocess
    classes: list[str]
    image_size: int
    input_size: int

    @classmethod
    def load(cls, directory: Path, command: str) -> SavedModel:
        fix = f"write the model again with `{command} --resume --retrain-again`"
        if (directory / MANIFEST).is_file():
            with reading(directory / MANIFEST, fix):
                manifest = json.loads((directory / MANIFEST).read_text())
                listed = [(directory / m["path"], float(m["weight"])) for m in manifest["members"]]
            members = [_load_one(folder, command, fix) for folder, _ in listed]
            network = Ensemble([(m, prep) for m, prep, _ in members], [w for _, w in listed])
            if manifest.get("tta"):
                network = FlipAverage(network)
            size = members[0][1].size
            return cls(network.eval(), IDENTITY, members[0][2], size, decoded_size(size))
        model, prep, classes = _load_one(directory, command, fix)
        if json.loads((directory / "config.json").read_text()).get("tta"):
            model = FlipAverage(model).eval()
        return cls(model, prep, classes, prep.size, prep.size)

    def pixels(self, path: str) -> np.ndarray:
        """One image ``[S, S, 3]`` uint8 (S larger than the model's input, for its crop), decoded exactly as the
        training images were; ValueError if it cannot be."""
        pixels, _, reason = decode(path, decoded_size(self.image_size))
        if pixels is None:
            raise ValueError(reason)
        return pixels

    @torch.no_grad()
    def probabilities(self, path: str) -> torch.Tensor:
        """Class probabilities of one image."""
        x = torch.from_numpy(self.pixels(path).copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255)
        return self.model(self.prep(x)).softmax(1)[0]


def _load_one(directory: Path, command: str, fix: str) -> tuple[nn.Module, Preprocess, list[str]]:
    """One model folder: the timm network in eval mode, its preprocessing, its class names."""
    if not (directory / "weights.safetensors").is_file():
        raise UsageError(f"no retrained model in {directory}; run `{command}` first (without --no-retrain)")
    with reading(directory / "config.json", fix):
        config = json.loads((directory / "config.json").read_text())
        model = timm.create_model(config["backbone"], pretrained=False, num_classes=config["num_classes"])
        size = int(config["input_size"][-1])
        prep = Preprocess(
            tuple(config["mean"]), tuple(config["std"]), config["crop_pct"], config["interpolation"], size
        )
    with reading(directory / "labels.json", fix):
        classes = json.loads((directory / "labels.json").read_text())
        if not isinstance(classes, list) or len(classes) != config["num_classes"]:
            raise ValueError(f"not a list of the {config['num_classes']} class names config.json has")
    with reading(directory / "weights.safetensors", fix):
        model.load_state_dict(load_file(str(directory / "weights.safetensors")))
    return model.eval(), prep, [str(c) for c in classes]


def predict_lines(saved: SavedModel, images: list[str], top: int) -> tuple[list[str], int]:
    """One line per image (``IMAGE: class p, class p``, or ``IMAGE: error: reason``) and how many failed."""
    lines, failed = [], 0
    for image in images:
        try:
            probs = saved.probabilities(image)
        except (ValueError, OSError) as e:
            lines.append(f"{image}: error: {e}")
            failed += 1
            continue
        values, indices = probs.topk(min(top, len(saved.classes)))
        ranked = ", ".join(
            f"{saved.classes[i]} {v:.3f}" for v, i in zip(values.tolist(), indices.tolist(), strict=True)
        )
        lines.append(f"{image}: {ranked}")
    return lines, failed

"""``python -m search predict TASK IMAGE...``: classify images with a task's retrained model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import load_file

from datasets import UsageError, decode, decoded_size, reading
from trainables import Preprocess

__all__ = ["SavedModel", "predict_lines"]


@dataclass
class SavedModel:
    """A retrained model folder loaded with timm and safetensors: the network, its inputs, its class names."""

    model: torch.nn.Module
    prep: Preprocess
    classes: list[str]
    image_size: int

    @classmethod
    def load(cls, directory: Path, command: str) -> SavedModel:
        if not (directory / "weights.safetensors").is_file():
            raise UsageError(f"no retrained model in {directory}; run `{command}` first (without --no-retrain)")
        fix = f"write the model again with `{command} --resume --retrain-again`"
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
        return cls(model.eval(), prep, [str(c) for c in classes], size)

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

"""Retraining the best configuration on train+val, testing it once, and saving the model directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ray
from safetensors.torch import save_file

from results import atomic_write, write_json
from search.cluster import Resources
from trainables import TrialSetup, retrain


def run_retrain(config: dict, setup: TrialSetup, resources: Resources) -> dict:
    """The retrain as a Ray task, so it runs where the cluster has room (a GPU node when trials used GPUs)."""
    remote = ray.remote(num_cpus=resources.retrain_cpus, num_gpus=resources.retrain_gpus)(retrain)
    return ray.get(remote.remote(config, dataclasses.replace(setup, cpus=resources.retrain_cpus)))


def save_model(directory: Path, outcome: dict, config: dict, classes: list[str], image_size: int) -> None:
    """``weights.safetensors``, ``config.json`` and ``labels.json``: loadable with timm + safetensors alone."""
    atomic_write(directory / "weights.safetensors", lambda p: save_file(outcome["state_dict"], str(p)))
    write_json(
        directory / "config.json",
        {
            "backbone": config["backbone"],
            "num_classes": len(classes),
            "input_size": [3, image_size, image_size],
            **outcome["preprocess"],
            "resize": "shorter side to input size, then centre crop",
            "config": config,
        },
    )
    write_json(directory / "labels.json", classes)

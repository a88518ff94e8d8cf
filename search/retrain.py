"""Retraining the best configuration on train+val, testing it once, and saving the model directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ray
from safetensors.torch import save_file

from datasets import atomic_folder
from results import write_json
from search.cluster import Resources
from trainables import TrialSetup, retrain


def run_retrains(config: dict, setup: TrialSetup, resources: Resources, seeds: list[int]) -> list[dict]:
    """The retrain as Ray tasks, one per seed, so they run where the cluster has room (a GPU node when trials used
    GPUs) and side by side when it has room for several."""
    remote = ray.remote(num_cpus=resources.retrain_cpus, num_gpus=resources.retrain_gpus)(retrain)
    one = dataclasses.replace(setup, cpus=resources.retrain_cpus)
    return ray.get([remote.remote(config, dataclasses.replace(one, seed=seed)) for seed in seeds])


def save_model(directory: Path, outcome: dict, config: dict, classes: list[str], image_size: int) -> None:
    """``weights.safetensors``, ``config.json`` and ``labels.json``: loadable with timm + safetensors alone. The
    folder is written beside ``directory`` and swapped in whole, so a crash never mixes two retrains' files."""
    with atomic_folder(directory) as staging:
        save_file(outcome["state_dict"], str(staging / "weights.safetensors"))
        write_json(
            staging / "config.json",
            {
                "backbone": config["backbone"],
                "num_classes": len(classes),
                "input_size": [3, image_size, image_size],
                **outcome["preprocess"],
                "resize": "shorter side to input size, then centre crop",
                "config": config,
            },
        )
        write_json(staging / "labels.json", classes)

"""Retraining the best configuration on train+val, testing it once, and saving the model directory."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import ray
from safetensors.torch import save_file

from datasets import atomic_folder
from results import write_json
from search.cluster import Resources
from search.options import ResolvedOptions
from trainables import TrialSetup, retrain

__all__ = ["retrain_scale", "retrain_summary", "run_retrains", "save_model"]


def run_retrains(config: dict, setup: TrialSetup, resources: Resources, seeds: list[int]) -> list[dict]:
    """The retrain as Ray tasks, one per seed, so they run where the cluster has room (a GPU node when trials used
    GPUs) and side by side when it has room for several."""
    remote = ray.remote(num_cpus=resources.retrain_cpus, num_gpus=resources.retrain_gpus)(retrain)
    one = dataclasses.replace(setup, cpus=resources.retrain_cpus)
    return ray.get([remote.remote(config, dataclasses.replace(one, seed=seed)) for seed in seeds])


def save_model(directory: Path, outcome: dict, config: dict, classes: list[str], image_size: int) -> None:
    """``weights.safetensors``, ``config.json`` and ``labels.json``: stock timm loads the folder
    (``timm.create_model("local-dir:DIR", pretrained=True)``: its config.json is also timm's, with the labels and the
    preprocessing in ``pretrained_cfg``). The folder is written beside ``directory`` and swapped in whole, so a crash
    never mixes two retrains' files."""
    prep = outcome["preprocess"]
    with atomic_folder(directory) as staging:
        save_file(outcome["state_dict"], str(staging / "weights.safetensors"))
        write_json(
            staging / "config.json",
            {
                "backbone": config["backbone"],
                "num_classes": len(classes),
                "input_size": [3, image_size, image_size],
                **prep,
                "resize": "shorter side to int(input size / crop_pct), then the centre input size (timm's evaluation)",
                "config": config,
                # timm's own keys (its save_for_hf layout); timm finds weights.safetensors as the folder's one file
                "architecture": config["backbone"],
                "label_names": classes,
                "pretrained_cfg": {
                    "input_size": [3, image_size, image_size],
                    "crop_mode": "center",
                    **{k: prep[k] for k in ("mean", "std", "crop_pct", "interpolation")},
                },
            },
        )
        write_json(staging / "labels.json", classes)


def retrain_scale(sizes: dict[str, int], opts: ResolvedOptions, resources: Resources) -> float:
    """The retrain's cost against one trial's epochs of the same configuration: more images and each seed, on a
    whole node's CPUs (measured here: 2 threads alone ran 2.5-3x faster than 1 beside another trial; counted as
    linear). A GPU trial's share is not counted as slower than the whole GPU."""
    if not opts.retrain:
        return 0.0
    speedup = 1.0 if resources.gpus_per_trial else max(1.0, resources.retrain_cpus / resources.cpus_per_trial)
    return (sizes["train"] + sizes["val"]) / sizes["train"] * opts.retrain_seeds / speedup


def retrain_summary(runs: list[dict]) -> dict:
    """best.json's test fields: the mean over the seeds' retrains (and their spread when there are several); the
    confusion matrix and ``model_test_acc`` are the saved model's (the first seed's)."""
    accuracy = [r["test_acc"] for r in runs]
    f1 = [r["test_macro_f1"] for r in runs]
    return {
        "test_acc": statistics.mean(accuracy),
        "test_macro_f1": statistics.mean(f1),
        "test_loss": statistics.mean(r["test_loss"] for r in runs),
        "test_acc_std": statistics.stdev(accuracy) if len(runs) > 1 else 0.0,
        "test_macro_f1_std": statistics.stdev(f1) if len(runs) > 1 else 0.0,
        "retrain_seeds": len(runs),
        "test_acc_per_seed": accuracy,
        "model_test_acc": runs[0]["test_acc"],
        "test_confusion": runs[0]["confusion"],
        "retrain_wall_s": sum(r["wall_s"] for r in runs),
    }

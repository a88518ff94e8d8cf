"""Retraining the best configuration on train+val, testing it once, and saving the model directory."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from typing import Any

import ray

from search.cluster.session import Resources
from trainables import TrialSetup, retrain

__all__ = ["retrain_summary", "retrain_task", "submit_retrains"]


def submit_retrains(
    config: dict, setup: TrialSetup, resources: Resources, seeds: list[int], epochs: int | None = None
) -> list[ray.ObjectRef]:
    """The retrain as Ray tasks, one per seed, so they run where the cluster has room (a GPU node when trials used
    GPUs) and side by side when it has room for several; ``epochs`` of the schedule (all by default)."""
    remote, one = retrain_task(retrain, setup, resources)
    return [remote.remote(config, dataclasses.replace(one, seed=seed), epochs) for seed in seeds]


def retrain_task(function: Callable, setup: TrialSetup, resources: Resources) -> tuple[Any, TrialSetup]:
    """``function`` as a Ray task with the retrain's resources (where the cluster has room for it), and ``setup``
    with the retrain's CPUs: the retrain, and the soup's and ensemble's choosing and testing."""
    remote = ray.remote(num_cpus=resources.retrain_cpus, num_gpus=resources.retrain_gpus)(function)
    return remote, dataclasses.replace(setup, cpus=resources.retrain_cpus)


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
        "test_n": int(sum(map(sum, runs[0]["confusion"]))),
        "test_confusion": runs[0]["confusion"],
        "retrain_wall_s": sum(r["wall_s"] for r in runs),
    }

"""What runs inside a trial: build, train epoch by epoch, report to Ray Tune, checkpoint.

``fit`` is the one training loop; ``train_trial`` wraps it for Ray Tune and ``retrain`` for the final model.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from ray import tune
from torch import nn

from datasets import DataCache
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.config import TrialConfig
from trainables.loop import Images, evaluate, steps_per_epoch, train_epoch
from trainables.model import build_model, freeze, normalization, trainable_parameters


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one search shares; it travels once through the object store."""

    data: DataCache
    max_epochs: int
    seed: int = 0
    cpus: int = 1
    weights: dict[str, Any] = field(default_factory=dict)  # backbone -> ObjectRef of its pretrained state dict


def _pretrained(setup: TrialSetup, backbone: str) -> dict[str, torch.Tensor] | None:
    ref = setup.weights.get(backbone)
    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


def _device() -> torch.device:
    """The GPU Ray gave this worker, if any (Ray hides the others through CUDA_VISIBLE_DEVICES)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit(
    config: TrialConfig,
    setup: TrialSetup,
    train: Images,
    val: Images | None,
    on_epoch: Callable[[dict, nn.Module, torch.optim.Optimizer], None],
    resume: dict | None = None,
) -> nn.Module:
    """Train ``config`` for ``setup.max_epochs`` epochs, calling ``on_epoch`` with each epoch's metrics."""
    torch.set_num_threads(max(1, setup.cpus))
    torch.manual_seed(setup.seed)
    device = _device()
    num_classes = len(setup.data.classes)
    model = build_model(config.backbone, num_classes, _pretrained(setup, config.backbone), config.dropout)
    freeze(model, config.freeze_depth)
    model.to(device)
    mean, std = normalization(model)
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=config.lr, weight_decay=config.weight_decay)
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])  # before the optimizer's state, which follows the parameters' device
        optimizer.load_state_dict(resume["optimizer"])
        torch.set_rng_state(resume["torch_rng"])
        start = int(resume["epoch"])
    per_epoch = steps_per_epoch(len(train), config.batch_size)
    for epoch in range(start, setup.max_epochs):
        loss, seen, seconds = train_epoch(
            model,
            optimizer,
            train,
            batch_size=config.batch_size,
            aug_strength=config.aug_strength,
            label_smoothing=config.label_smoothing,
            mean=mean,
            std=std,
            seed=setup.seed,
            epoch=epoch,
            step=epoch * per_epoch,
            total_steps=per_epoch * setup.max_epochs,
            base_lr=config.lr,
            device=device,
        )
        metrics = {"epoch": epoch + 1, "train_loss": loss, "img_per_s": seen / max(seconds, 1e-9)}
        if val is not None:
            result = evaluate(model, val, num_classes, mean, std, device=device)
            metrics.update(val_loss=result["loss"], val_acc=result["acc"], val_macro_f1=result["macro_f1"])
        on_epoch(metrics, model, optimizer)
    return model


def train_trial(config: dict, setup: TrialSetup) -> None:
    """The Ray Tune function trainable: reports every epoch with a checkpoint, resumes from the latest one."""
    cfg = TrialConfig.from_dict(config)
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch is noise
    node = ray.get_runtime_context().get_node_id()
    resume = None
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as directory:
            resume = load_checkpoint(directory)
    started = time.perf_counter()

    def report(metrics: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(directory, model, optimizer, metrics["epoch"])
            tune.report(
                {**metrics, "wall_s": time.perf_counter() - started, "node": node},
                checkpoint=tune.Checkpoint.from_directory(directory),
            )

    fit(cfg, setup, Images([setup.data.load("train")]), Images([setup.data.load("val")]), report, resume)


def retrain(config: dict, setup: TrialSetup) -> dict:
    """Train ``config`` on train+val, test once; returns test metrics, the weights and the per-epoch history."""
    cfg = TrialConfig.from_dict(config)
    history: list[dict] = []
    started = time.perf_counter()
    model = fit(
        cfg,
        setup,
        Images([setup.data.load("train"), setup.data.load("val")]),
        None,
        lambda metrics, *_: history.append({**metrics, "wall_s": time.perf_counter() - started}),
    )
    mean, std = normalization(model)
    test = evaluate(model, Images([setup.data.load("test")]), len(setup.data.classes), mean, std, device=_device())
    return {
        "test_acc": test["acc"],
        "test_macro_f1": test["macro_f1"],
        "test_loss": test["loss"],
        "confusion": test["confusion"].tolist(),
        "history": history,
        "mean": list(mean),
        "std": list(std),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "wall_s": time.perf_counter() - started,
    }

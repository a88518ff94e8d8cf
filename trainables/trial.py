"""What runs inside a trial: build, train epoch by epoch, report to Ray Tune, checkpoint.

``fit`` is the one training loop; ``train_trial`` wraps it for Ray Tune and ``retrain`` for the final model.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune
from torch import nn

from datasets import DataCache, local_copy
from trainables.accel import Accel
from trainables.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from trainables.config import MAX_FREEZE_DEPTH, TrialConfig
from trainables.loop import Images, evaluate, steps_per_epoch, train_epoch
from trainables.model import build_model, freeze, preprocessing, trainable_parameters
from trainables.probe import evaluate_features, probe_epoch, split_features, weights_key


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one search shares; it travels once through the object store."""

    data: DataCache
    max_epochs: int
    seed: int = 0
    cpus: int = 1
    weights: dict[str, Any] = field(default_factory=dict)  # backbone -> ObjectRef of its pretrained state dict
    feature_cache: bool = True  # linear probes without augmentation train on cached features
    compile: bool = False  # torch.compile the model: slower first epoch, faster later ones on a GPU
    data_node: str = ""  # the Ray node whose disk holds ``data``: the driver's
    data_copy: list | None = None  # [ObjectRef of cache_files(data)] for the other nodes, when on a cluster

    def local_data(self) -> DataCache:
        """The decoded images on this node's disk: the driver's cache on its node, elsewhere a copy made once by
        the first trial on that node, from the object store."""
        if self.data_copy is None:
            return self.data
        if ray.get_runtime_context().get_node_id() == self.data_node and (self.data.path / "meta.json").is_file():
            return self.data
        return local_copy(self.data, lambda: ray.get(self.data_copy[0]))


def _pretrained(setup: TrialSetup, backbone: str) -> dict[str, torch.Tensor] | None:
    ref = setup.weights.get(backbone)
    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


def _device() -> torch.device:
    """The GPU Ray gave this worker, if any (Ray hides the others through CUDA_VISIBLE_DEVICES)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit(
    config: TrialConfig,
    setup: TrialSetup,
    train_splits: tuple[str, ...],
    val_split: str | None,
    on_epoch: Callable[[dict, nn.Module, torch.optim.Optimizer], None],
    resume: dict | None = None,
) -> nn.Module:
    """Train ``config`` for ``setup.max_epochs`` epochs, calling ``on_epoch`` with each epoch's metrics."""
    torch.set_num_threads(max(1, setup.cpus))
    torch.manual_seed(setup.seed)
    device = _device()
    data = setup.local_data()
    num_classes = len(data.classes)
    model = build_model(config.backbone, num_classes, _pretrained(setup, config.backbone), config.dropout)
    freeze(model, config.freeze_depth)
    accel = Accel.for_device(device)
    model = accel.model(model)
    if setup.compile:
        model.compile()  # in place: the state dict keeps its keys, so checkpoints and the saved model do not change
    prep = preprocessing(model)
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=config.lr, weight_decay=config.weight_decay)
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])  # before the optimizer's state, which follows the parameters' device
        optimizer.load_state_dict(resume["optimizer"])
        restore_rng(resume)
        start = int(resume["epoch"])
    train = Images([data.load(s) for s in train_splits])
    val = Images([data.load(val_split)]) if val_split else None
    probe = setup.feature_cache and config.freeze_depth == MAX_FREEZE_DEPTH and config.aug_strength == 0
    if probe:  # the frozen backbone gives the same features every epoch: compute them once
        key = weights_key(model, config.backbone)
        features = {s: split_features(model, data, s, key, prep, device) for s in (*train_splits, val_split) if s}
        train_features = np.concatenate([features[s] for s in train_splits])
    per_epoch = steps_per_epoch(len(train), config.batch_size)
    for epoch in range(start, setup.max_epochs):
        common = dict(
            batch_size=config.batch_size,
            label_smoothing=config.label_smoothing,
            seed=setup.seed,
            epoch=epoch,
            step=epoch * per_epoch,
            total_steps=per_epoch * setup.max_epochs,
            base_lr=config.lr,
            device=device,
        )
        if probe:
            loss, seen, seconds = probe_epoch(
                model.get_classifier(), optimizer, train_features, train.labels, dropout=config.dropout, **common
            )
        else:
            loss, seen, seconds = train_epoch(
                model, optimizer, train, aug_strength=config.aug_strength, prep=prep, accel=accel, **common
            )
        metrics = {
            "epoch": epoch + 1,
            "batch_size": config.batch_size,
            "train_loss": loss,
            "img_per_s": seen / max(seconds, 1e-9),
        }
        if val is not None:
            result = (
                evaluate_features(model.get_classifier(), features[val_split], val.labels, num_classes, device)
                if probe
                else evaluate(model, val, num_classes, prep, accel=accel)
            )
            metrics.update(val_loss=result["loss"], val_acc=result["acc"], val_macro_f1=result["macro_f1"])
        on_epoch(metrics, model, optimizer)
    return model


def out_of_memory(error: BaseException) -> bool:
    """A GPU (or host) allocation failed: the batch did not fit, the configuration may still be good."""
    # on a CPU, an allocation that fails inside oneDNN surfaces as "could not create a primitive"
    host = ("can't allocate memory", "could not create a primitive")
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and any(text in str(error) for text in host)
    )


def train_trial(config: dict, setup: TrialSetup) -> None:
    """The Ray Tune function trainable: reports every epoch with a checkpoint, resumes from the latest one, and
    retries once with half the batch size when the batch does not fit in memory. Its worker may run the next trial,
    so nothing of this one stays in memory after it returns."""
    try:
        _train_trial(config, setup)
    finally:
        free_memory()


def free_memory() -> None:
    """Drop what the last model left: Python's cycles, and the GPU memory PyTorch keeps cached for reuse."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _train_trial(config: dict, setup: TrialSetup) -> None:
    cfg = TrialConfig.from_dict(config)
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch is noise
    node = ray.get_runtime_context().get_node_id()
    resume = None
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as directory:
            resume = load_checkpoint(directory)
        cfg = dataclasses.replace(cfg, batch_size=int(resume["batch_size"]))  # a halved batch stays halved
    started = time.perf_counter() - (resume or {}).get("wall_s", 0.0)  # time before a restart counts too
    with _scratch() as scratch:
        latest: list[Path] = []  # the last reported checkpoint, kept until the next: an OOM retry starts there

        def report(metrics: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
            directory = Path(scratch, f"epoch_{metrics['epoch']}")
            directory.mkdir(exist_ok=True)
            metrics = {**metrics, "wall_s": time.perf_counter() - started, "node": node}
            save_checkpoint(directory, model, optimizer, {k: metrics[k] for k in ("epoch", "batch_size", "wall_s")})
            tune.report(
                metrics,
                checkpoint=tune.Checkpoint.from_directory(directory),
            )
            for old in latest:
                shutil.rmtree(old, ignore_errors=True)
            latest[:] = [directory]

        try:
            fit(cfg, setup, ("train",), "val", report, resume)
            return
        except Exception as e:
            if not out_of_memory(e) or cfg.batch_size < 2:
                raise
            reason = str(e).splitlines()[0]
        free_memory()  # out of the except block, so the failed attempt's tensors (held by its traceback) can go
        smaller = dataclasses.replace(cfg, batch_size=cfg.batch_size // 2)
        logging.getLogger(__name__).warning(
            "batch of %d did not fit (%s); retrying with %d", cfg.batch_size, reason, smaller.batch_size
        )
        fit(smaller, setup, ("train",), "val", report, load_checkpoint(latest[0]) if latest else resume)


def _scratch() -> tempfile.TemporaryDirectory:
    """A folder for this trial's checkpoints before Ray Tune takes them. Ray kills a worker at the end of a search
    without running its cleanup, so each trial first removes the folders of workers that are gone."""
    root = Path(tempfile.gettempdir()) / "search-scratch"
    root.mkdir(exist_ok=True)
    for old in root.glob("pid*-*"):
        pid = old.name[3:].split("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except PermissionError:  # another user's live process
            pass
    return tempfile.TemporaryDirectory(prefix=f"pid{os.getpid()}-", dir=root)


def retrain(config: dict, setup: TrialSetup) -> dict:
    """Train ``config`` on train+val, test once; returns test metrics, the weights and the per-epoch history."""
    cfg = TrialConfig.from_dict(config)
    history: list[dict] = []
    started = time.perf_counter()
    model = fit(
        cfg,
        setup,
        ("train", "val"),
        None,
        lambda metrics, *_: history.append({**metrics, "wall_s": time.perf_counter() - started}),
    )
    prep = preprocessing(model)
    data = setup.local_data()
    test = evaluate(model, Images([data.load("test")]), len(data.classes), prep, accel=Accel.for_device(_device()))
    return {
        "test_acc": test["acc"],
        "test_macro_f1": test["macro_f1"],
        "test_loss": test["loss"],
        "confusion": test["confusion"].tolist(),
        "history": history,
        "preprocess": dataclasses.asdict(prep),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "wall_s": time.perf_counter() - started,
    }

"""What runs inside a trial: ``train_trial`` wraps ``fit`` for Ray Tune (report, checkpoint, resume, retry at half
the batch), and ``retrain`` trains the final model on train+val and tests it once."""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
from ray import tune
from torch import nn

from datasets import atomic_write, short
from trainables.accel import Accel
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.combine import VAL_PROBS_FILE, metrics_of, probabilities
from trainables.model import preprocessing
from trainables.setup import TrialSetup, device
from trainables.steps import Images
from trainables.training import fit
from trainables.trial_config import TrialConfig

__all__ = ["free_memory", "out_of_memory", "retrain", "train_trial"]

log = logging.getLogger(__name__)


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
        resume = _read_checkpoint(checkpoint)
    if resume is not None:
        cfg = dataclasses.replace(cfg, batch_size=int(resume["batch_size"]))  # a halved batch stays halved
    started = time.perf_counter() - (resume or {}).get("wall_s", 0.0)  # time before a restart counts too
    with _scratch() as scratch:
        latest: list[Path] = []  # the last reported checkpoint, kept until the next: an OOM retry starts there

        def report(metrics: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
            directory = Path(scratch, f"epoch_{metrics['epoch']}")
            directory.mkdir(exist_ok=True)
            probs = metrics.pop("val_probs", None)
            metrics = {**metrics, "wall_s": time.perf_counter() - started, "node": node}
            kept = ("epoch", "batch_size", "wall_s", "kept_epoch")
            save_checkpoint(directory, model, optimizer, {k: metrics[k] for k in kept})
            if probs is not None:  # what ensembles are chosen from, without another pass over the validation images
                atomic_write(directory / VAL_PROBS_FILE, lambda p: np.save(p, probs.astype(np.float32)))
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
        log.warning("batch of %d did not fit (%s); retrying with %d", cfg.batch_size, reason, smaller.batch_size)
        # oneDNN fails every later primitive of a process whose allocation failed inside one (measured: the retry's
        # first convolution); PyTorch's own kernels then train the smaller batch
        onednn = "could not create a primitive" not in reason
        with torch.backends.mkldnn.flags(enabled=onednn):
            fit(smaller, setup, ("train",), "val", report, load_checkpoint(latest[0]) if latest else resume)


def _read_checkpoint(checkpoint: tune.Checkpoint) -> dict | None:
    """The checkpoint to continue from; None when it is damaged (a crash or a full disk while Ray Tune copied it):
    the trial then starts again from its first epoch, which the tables keep once, with one log line."""
    with checkpoint.as_directory() as directory:
        try:
            return load_checkpoint(directory)
        except Exception as e:  # safetensors, torch and json each raise their own type for a damaged file
            log.warning(
                "the checkpoint in %s is damaged (%s); the trial starts again from its first epoch",
                checkpoint.path,
                short(e),
            )
            return None


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


def retrain(config: dict, setup: TrialSetup, epochs: int | None = None) -> dict:
    """Train ``config`` on train+val for ``epochs`` of its schedule (all by default; a probe: the epochs its trial
    kept), test once; returns test metrics and probabilities (also with test-time augmentation), the weights and the
    per-epoch history."""
    cfg = TrialConfig.from_dict(config)
    history: list[dict] = []
    started = time.perf_counter()
    model = fit(
        cfg,
        setup,
        ("train", "val"),
        None,
        lambda metrics, *_: history.append({**metrics, "wall_s": time.perf_counter() - started}),
        epochs=epochs,
    )
    data = setup.local_data()
    prep = preprocessing(model, data.image_size)
    accel, images = Accel.for_device(device()), Images([data.load("test")])
    probs = probabilities(model, images, prep, accel=accel)
    test = metrics_of(probs, images.labels, len(data.classes))
    return {
        "test_acc": test["acc"],
        "test_macro_f1": test["macro_f1"],
        "test_loss": test["loss"],
        "confusion": test["confusion"].tolist(),
        # what the soups, ensembles and test-time augmentation are tested with, without another pass
        "test_probs": probs,
        "test_probs_tta": probabilities(model, images, prep, tta=True, accel=accel),
        "history": history,
        "preprocess": dataclasses.asdict(prep),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "wall_s": time.perf_counter() - started,
    }

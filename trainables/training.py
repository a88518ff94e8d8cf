"""How a run trains, chosen once: the head alone on the frozen backbone's cached features (a linear probe, from the
head fitted on them), or the whole model, its new head first fitted on those features (LP-FT: Kumar et al., ICLR
2022). ``fit`` then runs one loop over epochs: train, evaluate, report."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from datasets import DataCache
from trainables.accel import Accel
from trainables.boundary import Boundary, frozen_boundary, stages_after
from trainables.checkpoint import restore_rng
from trainables.model import build_model, freeze, parameter_groups, preprocessing
from trainables.peak import peak_memory_mb, reset_peak_memory
from trainables.preprocess import Preprocess
from trainables.probe import evaluate_features, load_head, probe_head, split_features, weights_key
from trainables.setup import TrialSetup, device
from trainables.steps import Images, OnDevice, Schedule, epoch_size, evaluate, train_epoch
from trainables.trial_config import MAX_FREEZE_DEPTH, TrialConfig

__all__ = ["BACKBONE_LR_SCALE", "HeadOnFeatures", "Run", "WholeModel", "fit", "head_path", "start"]

# LP-FT: a pretrained backbone learns at a tenth of its fitted head's rate (discriminative learning rates). On
# sports-a50 whole-model rates of 2.6e-3 and above sent fine-tuning to chance in one epoch, while 2.5e-5 to 1e-4 gave
# the best trials; the head, already fitted, can move faster without harm
BACKBONE_LR_SCALE = 0.1


def fit(
    config: TrialConfig,
    setup: TrialSetup,
    train_splits: tuple[str, ...],
    val_split: str | None,
    on_epoch: Callable[[dict, nn.Module, torch.optim.Optimizer], None],
    resume: dict | None = None,
    epochs: int | None = None,
) -> nn.Module:
    """Train ``config`` for ``epochs`` of its ``setup.max_epochs``-epoch schedule (all of them by default),
    continuing after ``resume`` (a loaded checkpoint).

    After each epoch ``on_epoch(metrics, model, optimizer)`` is called with ``metrics``: ``epoch`` (from 1),
    ``batch_size``, ``train_loss``, ``img_per_s``, ``train_s`` (its training steps' seconds), ``warm_head`` (the
    head started from the fitted probe), ``on_features`` (a probe on cached features), ``kept_epoch`` (the epoch
    whose weights the model holds: a probe goes back to its best), ``train_size`` (the side it trained at),
    ``peak_memory_mb`` (the epoch's, where it ran: ``trainables.peak``), ``device`` (``cuda`` or ``cpu``) and, when
    ``val_split`` is given, ``val_loss``, ``val_acc``, ``val_macro_f1``, ``val_n`` (photos) and ``val_probs``
    (``[N, C]``); it may checkpoint the model and optimizer.
    """
    torch.set_num_threads(max(1, setup.cpus))
    dev = device()
    run = start(config, setup, train_splits, val_split, resume)
    for epoch in range(run.first_epoch, min(setup.max_epochs, setup.max_epochs if epochs is None else epochs)):
        reset_peak_memory(dev)
        loss, seen, seconds = run.train(epoch)
        metrics = {
            "epoch": epoch + 1,
            "batch_size": config.batch_size,
            "train_loss": loss,
            "img_per_s": seen / max(seconds, 1e-9),
            "train_s": seconds,
            "warm_head": run.warm_head,
            "on_features": isinstance(run, HeadOnFeatures),
            "train_size": run.train_size(epoch),
        }
        if val_split:
            result = run.evaluate(epoch)
            metrics.update(
                val_loss=result["loss"],
                val_acc=result["acc"],
                val_macro_f1=result["macro_f1"],
                val_n=int(result["confusion"].sum()),
                val_probs=result["probs"],
            )
        metrics.update(kept_epoch=run.kept_epoch(epoch), peak_memory_mb=peak_memory_mb(dev), device=dev.type)
        on_epoch(metrics, run.model, run.optimizer)
    return run.model


@dataclass
class Run:
    """A model being trained, its optimizer and schedule, and the data it trains and is evaluated on."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    num_classes: int
    first_epoch: int
    warm_head: bool

    def train(self, epoch: int) -> tuple[float, int, float]:
        """One epoch: (mean loss, images seen, seconds)."""
        raise NotImplementedError

    def evaluate(self, epoch: int) -> dict:
        """Loss, accuracy, macro-F1, the confusion matrix and the probabilities on the validation split, after
        epoch ``epoch`` (from 0)."""
        raise NotImplementedError

    def train_size(self, epoch: int) -> int:
        """The side of the images epoch ``epoch`` trains on (0: cached features)."""
        return 0

    def kept_epoch(self, epoch: int) -> int:
        """The epoch (from 1; 0 for the starting weights) whose weights the model holds after epoch ``epoch``."""
        return epoch + 1


@dataclass
class HeadOnFeatures(Run):
    """A linear probe: the frozen backbone's output never changes, so its epochs train the head on cached
    features, from the head fitted on them; augmentation does not apply (docs/design.md: why). With a validation
    split an epoch that scores lower (accuracy, then loss) than the best so far, the fitted head included, is
    undone: a probe trial never reports less than its fitted probe, and its checkpoint holds what it reports."""

    features: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    val_features: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    dropout: float = 0.0
    start_kept: int = 0  # the epoch whose head it starts from: 0 (the fitted head), or the resumed checkpoint's
    best: tuple[tuple[float, float], dict, dict, int] | None = None  # (score, metrics, head weights, epoch)

    def train(self, epoch: int) -> tuple[float, int, float]:
        head = self.model.get_classifier()
        if self.val_features is not None and self.best is None:  # the head it starts from: fitted, or resumed
            self._keep(self._evaluate(), self.start_kept)
        inputs = OnDevice(self.features, self.labels)
        model = nn.Sequential(nn.Dropout(self.dropout), head)  # the dropout the whole model puts before its head
        return train_epoch(model, self.optimizer, inputs, epoch, self.schedule, accel=Accel(self.features.device))

    def evaluate(self, epoch: int) -> dict:
        result = self._evaluate()
        if self.best is None or (result["acc"], -result["loss"]) > self.best[0]:
            self._keep(result, epoch + 1)
        else:
            self.model.get_classifier().load_state_dict(self.best[2])
        return self.best[1]

    def kept_epoch(self, epoch: int) -> int:
        return epoch + 1 if self.best is None else self.best[3]

    def _evaluate(self) -> dict:
        head = self.model.get_classifier()
        return evaluate_features(head, self.val_features, self.val_labels, self.num_classes, self.features.device)

    def _keep(self, result: dict, epoch: int) -> None:
        state = {k: v.detach().clone() for k, v in self.model.get_classifier().state_dict().items()}
        self.best = ((result["acc"], -result["loss"]), result, state, epoch)


@dataclass
class WholeModel(Run):
    """Images through the whole model, augmented, with the stages below ``freeze_depth`` frozen. From a fitted
    probe, every BatchNorm layer keeps its pretrained statistics: the probe was fitted on features normalised by
    them, and re-estimating them from small augmented batches moved real photos' validation accuracy from the
    probe's 0.93 to 0.78-0.84 after one epoch, whatever the learning rate (docs/measurements.md). With a
    ``boundary`` the frozen stages' cached activations stand in for the photos they would see
    (``trainables.boundary``)."""

    train_images: Images | None = None
    val_images: Images | None = None
    prep: Preprocess | None = None
    accel: Accel | None = None
    aug_strength: float = 0.0
    progressive: bool = False
    boundary: Boundary | None = None

    def train(self, epoch: int) -> tuple[float, int, float]:
        cached = self.boundary.train if self.boundary else None
        with stages_after(self.model, self.boundary.depth) if cached is not None else contextlib.nullcontext():
            return train_epoch(
                self.model,
                self.optimizer,
                self.train_images if cached is None else cached,
                epoch,
                self.schedule,
                aug_strength=self.aug_strength,
                prep=self.prep if cached is None else None,
                accel=self.accel,
                keep_statistics=self.warm_head,
                size=self.train_size(epoch),
            )

    def evaluate(self, epoch: int) -> dict:
        if self.boundary and self.boundary.val is not None:
            with stages_after(self.model, self.boundary.depth):
                return evaluate(self.model, self.boundary.val, self.num_classes, None, accel=self.accel)
        return evaluate(self.model, self.val_images, self.num_classes, self.prep, accel=self.accel)

    def train_size(self, epoch: int) -> int:
        size = self.prep.size or self.train_images.parts[0].shape[1]
        return epoch_size(size, epoch, self.schedule.epochs) if self.progressive else size


def head_path(data: DataCache, key: str, splits: tuple[str, ...]) -> Path:
    return data.path / "features" / key / f"head-{'+'.join(splits)}.safetensors"


def _cached_features(
    model: nn.Module, backbone: str, data: DataCache, splits: tuple[str, ...], prep: Preprocess, dev: torch.device
) -> tuple[str, dict[str, np.ndarray]]:
    """The frozen backbone's key and features of ``splits``, computed once per weights and data (the feature
    cache)."""
    key = weights_key(model, backbone)
    return key, {s: split_features(model, data, s, key, prep, dev) for s in splits}


def start(
    config: TrialConfig,
    setup: TrialSetup,
    train_splits: tuple[str, ...],
    val_split: str | None,
    resume: dict | None = None,
) -> Run:
    """Build the model and choose how it trains: on cached features at the last freeze depth, else the whole model,
    its head fitted on the cached features first when the backbone is pretrained (unless ``resume`` brings one)."""
    torch.manual_seed(setup.seed)  # a model without pretrained weights starts the same in every run of the seed
    dev = device()
    data = setup.local_data()
    num_classes = len(data.classes)
    pretrained = setup.pretrained(config.backbone)
    model = build_model(config.backbone, num_classes, pretrained, config.dropout)
    freeze(model, config.freeze_depth)
    accel = Accel.for_device(dev)
    model = accel.model(model)
    prep = preprocessing(model, data.image_size)
    train = Images([data.load(s) for s in train_splits])
    on_features = setup.feature_cache and config.freeze_depth == MAX_FREEZE_DEPTH
    # LP-FT needs features worth probing: a randomly initialised backbone's are not, and its fitted head would
    # start fine-tuning with huge, meaningless logits; a probe starts from the fitted head in either case (it is
    # the linear model the features give)
    warm_head = setup.feature_cache and (on_features or pretrained is not None)
    features: dict[str, np.ndarray] = {}
    if on_features or (warm_head and resume is None):
        splits = (*train_splits, val_split) if on_features and val_split else train_splits
        key, features = _cached_features(model, config.backbone, data, splits, prep, dev)
        train_features = np.concatenate([features[s] for s in train_splits])
        if warm_head and resume is None:
            path = head_path(data, key, train_splits)
            load_head(model.get_classifier(), probe_head(train_features, train.labels, num_classes, path, setup.seed))
    boundary = None
    if setup.feature_cache and 0 < config.freeze_depth < MAX_FREEZE_DEPTH and not setup.compile:
        photos_only = config.aug_strength > 0 or setup.progressive  # what changes in each epoch cannot be cached
        cached = () if photos_only else train_splits
        boundary = frozen_boundary(model, config.backbone, config.freeze_depth, data, cached, val_split, prep, accel)
    if setup.compile:
        model.compile()  # in place: the state dict keeps its keys, so checkpoints and the saved model do not change
    groups = parameter_groups(model, BACKBONE_LR_SCALE if warm_head else 1.0)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    first_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])  # before the optimizer's state, which follows the parameters' device
        optimizer.load_state_dict(resume["optimizer"])
        restore_rng(resume)
        first_epoch = int(resume["epoch"])
    schedule = Schedule.of(
        len(train), config.batch_size, config.lr, setup.max_epochs, setup.seed, config.label_smoothing
    )
    common = (model, optimizer, schedule, num_classes, first_epoch, warm_head)
    if on_features:
        val = data.load(val_split) if val_split else (None, None)
        return HeadOnFeatures(
            *common,
            features=torch.from_numpy(train_features).to(dev),
            labels=torch.from_numpy(train.labels).to(dev),
            val_features=features.get(val_split),
            val_labels=val[1],
            dropout=config.dropout,
            start_kept=int((resume or {}).get("kept_epoch", first_epoch)),
        )
    val_images = Images([data.load(val_split)]) if val_split else None
    return WholeModel(
        *common,
        train_images=train,
        val_images=val_images,
        prep=prep,
        accel=accel,
        aug_strength=config.aug_strength,
        progressive=setup.progressive,
        boundary=boundary,
    )

"""The training loop outside Ray: resuming from a checkpoint, and the linear probe's feature cache."""

import dataclasses

import pytest
import torch

from datasets import build_cache, scan_folder
from trainables import TrialConfig, TrialSetup, fit
from trainables.checkpoint import load_checkpoint, save_checkpoint

CONFIG = TrialConfig(
    "resnet10t", freeze_depth=1, aug_strength=0.5, lr=3e-3, weight_decay=1e-4, batch_size=8, label_smoothing=0.1
)


def _setup(tiny_eggs, tmp_path, epochs) -> TrialSetup:
    return TrialSetup(build_cache(scan_folder(tiny_eggs), 24, tmp_path / "cache"), max_epochs=epochs, seed=5)


def test_a_run_resumed_from_its_checkpoint_ends_with_the_same_weights(tiny_eggs, tmp_path):
    setup = _setup(tiny_eggs, tmp_path, epochs=2)
    config = dataclasses.replace(CONFIG, dropout=0.3)  # dropout draws from torch's RNG: the checkpoint must restore it
    history = []
    straight = fit(config, setup, ("train",), "val", lambda m, *_: history.append(m))
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0 <= h["val_acc"] <= 1 and h["img_per_s"] > 0 for h in history)

    class Interrupted(Exception):
        pass

    def interrupt_after_first(metrics, model, optimizer):
        save_checkpoint(tmp_path, model, optimizer, {"epoch": metrics["epoch"], "batch_size": metrics["batch_size"]})
        torch.rand(7)  # the generators move on before the "kill"
        raise Interrupted  # as a killed worker would, after the epoch's checkpoint

    with pytest.raises(Interrupted):
        fit(config, setup, ("train",), "val", interrupt_after_first)
    resumed_epochs = []
    resumed = fit(
        config,
        setup,
        ("train",),
        "val",
        lambda m, *_: resumed_epochs.append(m["epoch"]),
        resume=load_checkpoint(tmp_path),
    )
    assert resumed_epochs == [2]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


def test_linear_probe_on_cached_features_matches_recomputing_the_frozen_backbone(tiny_eggs, tmp_path):
    probe = dataclasses.replace(CONFIG, freeze_depth=5, aug_strength=0.0, dropout=0.0)
    setup = _setup(tiny_eggs, tmp_path, epochs=2)
    cached, plain = [], []
    fit(probe, setup, ("train",), "val", lambda m, *_: cached.append(m))
    assert list((setup.data.path / "features").glob("*/train.npy")), "features should be cached beside the data"
    fit(probe, dataclasses.replace(setup, feature_cache=False), ("train",), "val", lambda m, *_: plain.append(m))
    for a, b in zip(cached, plain, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_acc"] == pytest.approx(b["val_acc"]) and a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)


def test_augmented_or_partly_frozen_trials_never_use_the_feature_cache(tiny_eggs, tmp_path):
    setup = _setup(tiny_eggs, tmp_path, epochs=1)
    for config in (
        dataclasses.replace(CONFIG, freeze_depth=5, aug_strength=0.3),
        dataclasses.replace(CONFIG, freeze_depth=4, aug_strength=0.0),
    ):
        fit(config, setup, ("train",), "val", lambda *_: None)
    assert not (setup.data.path / "features").exists()

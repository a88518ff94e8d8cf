"""The training loop outside Ray: resuming from a checkpoint, the feature cache, LP-FT's fitted head."""

import dataclasses
import logging

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

from datasets import build_cache, scan_folder
from trainables import TrialConfig, TrialSetup, fit
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.model import preprocessing
from trainables.probe import L2_GRID, choose_l2, evaluate_features, fit_head, split_features
from trainables.steps import epoch_size
from trainables.training import start

CONFIG = TrialConfig(
    "resnet10t", freeze_depth=1, aug_strength=0.5, lr=3e-3, weight_decay=1e-4, batch_size=8, label_smoothing=0.1
)


def _setup(tiny_eggs, tmp_path, epochs, size=24) -> TrialSetup:
    """Trials of resnet10t with "pretrained" weights, as a --weights file would give them."""
    torch.manual_seed(0)
    weights = {"resnet10t": timm.create_model("resnet10t").state_dict()}
    cache = build_cache(scan_folder(tiny_eggs), size, tmp_path / "cache")
    return TrialSetup(cache, max_epochs=epochs, seed=5, weights=weights)


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


def test_a_probe_starts_from_the_fitted_head_and_never_reports_less(tiny_eggs, tmp_path):
    setup = _setup(tiny_eggs, tmp_path, epochs=4)
    # a learning rate that wrecks the fitted head: every epoch it trains is worse, and is undone
    probe = dataclasses.replace(CONFIG, freeze_depth=5, aug_strength=0.0, dropout=0.0, lr=30.0)
    history = []
    run = start(probe, setup, ("train",), "val")
    fitted = run._evaluate()
    assert run.warm_head and list((setup.data.path / "features").glob("*/train.npy"))
    model = fit(probe, setup, ("train",), "val", lambda m, *_: history.append(m))
    assert all(h["on_features"] and h["val_acc"] >= fitted["acc"] for h in history)
    kept = history[-1]["kept_epoch"]
    assert history[-1]["val_acc"] == history[kept - 1]["val_acc"] if kept else history[-1]["val_acc"] == fitted["acc"]
    # the weights it ends with are the ones it reports
    ended = evaluate_features(model.get_classifier(), run.val_features, run.val_labels, 2, torch.device("cpu"))
    assert ended["acc"] == history[-1]["val_acc"] and ended["loss"] == pytest.approx(history[-1]["val_loss"])


def test_a_probe_trains_on_the_cached_features_whatever_its_augmentation(tiny_eggs, tmp_path):
    setup = _setup(tiny_eggs, tmp_path, epochs=1)
    probe = dataclasses.replace(CONFIG, freeze_depth=5, aug_strength=0.0)
    clean, augmented = [], []
    fit(probe, setup, ("train",), "val", lambda m, *_: clean.append(m))
    fit(dataclasses.replace(probe, aug_strength=0.7), setup, ("train",), "val", lambda m, *_: augmented.append(m))
    assert clean[0]["train_loss"] == augmented[0]["train_loss"] and clean[0]["val_acc"] == augmented[0]["val_acc"]
    assert clean[0]["warm_head"] and clean[0]["train_size"] == 0


@pytest.mark.slow  # three whole epochs of a trial: 6 s
def test_progressive_resizing_trains_the_first_epochs_smaller_and_evaluates_at_full_size(tiny_eggs, tmp_path):
    setup = _setup(tiny_eggs, tmp_path, epochs=4, size=64)
    plain, progressive = [], []
    fit(CONFIG, setup, ("train",), "val", lambda m, *_: plain.append(m))
    fit(CONFIG, dataclasses.replace(setup, progressive=True), ("train",), "val", lambda m, *_: progressive.append(m))
    assert [h["train_size"] for h in plain] == [64] * 4, "off by default: it cost accuracy on real photos"
    assert [h["train_size"] for h in progressive] == [epoch_size(64, e, 4) for e in range(4)] == [48, 64, 64, 64]
    assert all(h["val_probs"].shape == (setup.data.sizes["val"], 2) for h in plain + progressive)


def test_a_fine_tuning_run_starts_from_the_probe_head_fitted_once_per_backbone(tiny_eggs, tmp_path, caplog):
    setup = _setup(tiny_eggs, tmp_path, epochs=1)
    caplog.set_level(logging.INFO, logger="trainables.probe")
    first = start(CONFIG, setup, ("train",), "val")
    second = start(dataclasses.replace(CONFIG, freeze_depth=3, lr=1e-4), setup, ("train",), "val")
    [head_file] = (setup.data.path / "features").glob("*/head-train.safetensors")
    head = load_file(head_file)
    for run in (first, second):
        assert run.warm_head
        assert torch.equal(run.model.get_classifier().weight.detach(), head["weight"])
        assert torch.equal(run.model.get_classifier().bias.detach(), head["bias"])
    assert sum("fitted the probe head" in r.message for r in caplog.records) == 1
    # before any fine-tuning step the model is the fitted probe: its epoch 1 starts where a probe's ends
    key, device = head_file.parent.name, first.accel.device
    val_features = split_features(
        first.model, setup.data, "val", key, preprocessing(first.model, setup.data.image_size), device
    )
    probe = evaluate_features(first.model.get_classifier(), val_features, setup.data.load("val")[1], 2, device)
    assert first.evaluate(0)["acc"] == pytest.approx(probe["acc"])
    assert head["weight"].abs().sum() > 0  # fitted, not the zero head a cold start has
    scratch = start(CONFIG, dataclasses.replace(setup, weights={}), ("train",), "val")
    assert not scratch.warm_head and scratch.model.get_classifier().weight.abs().sum() == 0  # random features


def test_the_fitted_probe_head_separates_classes_the_features_separate():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    features = (rng.normal(size=(120, 16)) + np.eye(3, 16)[labels] * 4 + 10).astype(np.float32)  # offset: raw
    head = fit_head(features, labels, 3, l2=1e-3)
    logits = torch.from_numpy(features) @ head["weight"].T + head["bias"]
    assert (logits.argmax(1).numpy() == labels).mean() > 0.95


def test_the_probe_penalty_is_chosen_on_held_out_folds_of_the_training_split():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 12)
    # few images, many noisy dimensions: a weak penalty memorises the noise, the folds see it
    features = (rng.normal(size=(48, 200)) + np.eye(4, 200)[labels] * 1.5).astype(np.float32)
    chosen = choose_l2(features, labels, 4)
    assert chosen in L2_GRID and chosen > min(L2_GRID)
    assert choose_l2(features, labels, 4) == chosen  # the folds are seeded


def _cut_short(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble_tail(path):
    """The same size, the last bytes changed: a tensor's values, which no parser notices."""
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(64)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_cut_short, _garble_tail], ids=["cut short", "garbage"])
@pytest.mark.parametrize("name", ["model.safetensors", "trainer.pt"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, name, damage):
    model = timm.create_model("resnet10t", num_classes=2)
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path, model, optimizer, {"epoch": 1, "batch_size": 8})
    assert load_checkpoint(tmp_path)["epoch"] == 1
    damage(tmp_path / name)
    with pytest.raises(ValueError, match=f"{tmp_path / name} is not the file the checkpoint wrote"):
        load_checkpoint(tmp_path)


def test_damaged_cached_features_and_heads_are_computed_again(tiny_eggs, tmp_path, caplog):
    setup = _setup(tiny_eggs, tmp_path, epochs=1)
    first = start(CONFIG, setup, ("train",), "val")
    [folder] = (setup.data.path / "features").glob("*")
    cached = {p.name: p.read_bytes() for p in folder.iterdir()}
    _cut_short(folder / "train.npy")
    _garble_tail(folder / "head-train.safetensors")  # same size, other numbers: only the checksum tells
    again = start(CONFIG, setup, ("train",), "val")
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 2 and all("computing it again" in m for m in damaged)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == cached, "rebuilt as they were"
    assert torch.equal(first.model.get_classifier().weight, again.model.get_classifier().weight)

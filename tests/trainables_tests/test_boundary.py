"""The frozen boundary: a fine-tuning trial's frozen stages computed once, the model then running only the rest."""

import numpy as np
import pytest
import timm
import torch

import trainables.boundary
import trainables.training
from datasets import build_cache, scan_folder
from trainables import TrialConfig, TrialSetup, fit
from trainables.boundary import prefix_forward, stages_after
from trainables.model import freeze


@pytest.mark.parametrize("backbone", ["resnet10t", "mobilenetv3_small_050", "test_efficientnet"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_the_stages_after_the_boundary_on_its_activations_give_the_whole_model(backbone, depth):
    torch.manual_seed(0)
    model = timm.create_model(backbone, num_classes=3).eval()
    freeze(model, depth)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        whole = model(x)
        inside = prefix_forward(model, depth, x)
        with stages_after(model, depth):
            split = model(inside)
        again = model(x)
    assert inside.shape[-1] < x.shape[-1]  # the boundary lies inside the network, not at its input
    torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again, whole)  # the model is whole again after the context
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    with stages_after(model, depth):
        left = {n for n, _ in model.named_parameters()}
    assert left and not left & frozen and {n for n, _ in model.named_parameters()} == left | frozen


def _history(setup: TrialSetup, config: TrialConfig) -> list[dict]:
    history: list[dict] = []
    fit(config, setup, ("train",), "val", lambda m, *_: history.append(m))
    return history


@pytest.mark.parametrize("aug_strength", [0.0, 0.5])
def test_a_trial_on_the_boundary_trains_as_it_would_on_photos(tiny_eggs, tmp_path, monkeypatch, aug_strength):
    torch.manual_seed(0)
    weights = {"resnet10t": timm.create_model("resnet10t").state_dict()}
    cache = build_cache(scan_folder(tiny_eggs), 32, tmp_path / "cache")
    setup = TrialSetup(cache, max_epochs=2, seed=3, weights=weights)
    config = TrialConfig("resnet10t", 2, aug_strength, 3e-3, 1e-4, 8, 0.1, 0.2)
    cached = _history(setup, config)
    files = sorted(p.name for p in (cache.path / "features").glob("*/depth2-*.npy"))
    # the validation pass always runs on the boundary; training only without augmentation
    assert files == (["depth2-train.npy", "depth2-val.npy"] if aug_strength == 0 else ["depth2-val.npy"])
    again = _history(setup, config)  # read back from the cache
    monkeypatch.setattr(trainables.training, "frozen_boundary", lambda *a, **k: None)
    photos = _history(setup, config)
    for run in (cached, again):
        assert [h["epoch"] for h in run] == [1, 2]
        for a, b in zip(run, photos, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
            np.testing.assert_allclose(a["val_probs"], b["val_probs"], atol=1e-5)


def test_a_trial_without_the_feature_cache_runs_on_photos(tiny_eggs, tmp_path):
    cache = build_cache(scan_folder(tiny_eggs), 32, tmp_path / "cache")
    setup = TrialSetup(cache, max_epochs=1, seed=3, feature_cache=False)
    _history(setup, TrialConfig("resnet10t", 2, 0.0, 3e-3, 1e-4, 8, 0.1))
    assert not list(cache.path.glob("features/*/depth*"))


def test_a_split_too_large_for_the_boundary_runs_on_photos(tiny_eggs, tmp_path, monkeypatch):
    monkeypatch.setattr(trainables.boundary, "BOUNDARY_BYTES", 1000)
    cache = build_cache(scan_folder(tiny_eggs), 32, tmp_path / "cache")
    setup = TrialSetup(cache, max_epochs=1, seed=3)
    history = _history(setup, TrialConfig("resnet10t", 2, 0.0, 3e-3, 1e-4, 8, 0.1))
    assert len(history) == 1 and not list(cache.path.glob("features/*/depth*"))

"""The training loop outside Ray: a resumed run continues exactly where the checkpoint left it."""

import pytest
import torch

from datasets import build_cache, scan_folder
from trainables import Images, TrialConfig, TrialSetup, fit
from trainables.checkpoint import load_checkpoint, save_checkpoint

CONFIG = TrialConfig(
    "resnet10t", freeze_depth=1, aug_strength=0.5, lr=3e-3, weight_decay=1e-4, batch_size=8, label_smoothing=0.1
)


def _setup(tiny_eggs, tmp_path, epochs):
    cache = build_cache(scan_folder(tiny_eggs), 24, tmp_path / "cache")
    return (
        TrialSetup(cache, max_epochs=epochs, seed=5, cpus=1),
        Images([cache.load("train")]),
        Images([cache.load("val")]),
    )


def test_a_run_resumed_from_its_checkpoint_ends_with_the_same_weights(tiny_eggs, tmp_path):
    setup, train, val = _setup(tiny_eggs, tmp_path, epochs=2)
    history = []
    straight = fit(CONFIG, setup, train, val, lambda m, *_: history.append(m))
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0 <= h["val_acc"] <= 1 and h["img_per_s"] > 0 for h in history)

    class Interrupted(Exception):
        pass

    def interrupt_after_first(metrics, model, optimizer):
        save_checkpoint(tmp_path, model, optimizer, metrics["epoch"])
        raise Interrupted  # as a killed worker would, after the epoch's checkpoint

    with pytest.raises(Interrupted):
        fit(CONFIG, setup, train, val, interrupt_after_first)
    resumed_epochs = []
    resumed = fit(
        CONFIG, setup, train, val, lambda m, *_: resumed_epochs.append(m["epoch"]), resume=load_checkpoint(tmp_path)
    )
    assert resumed_epochs == [2]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name

import numpy as np
import pytest
import torch

from datasets import UsageError
from tests.conftest import trial_config
from trainables import Images, TrialConfig, lr_at, macro_f1
from trainables.steps import batches, steps_per_epoch

CONFIG = trial_config(backbone="resnet10t", aug_strength=0.5, batch_size=16)


def test_lr_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 1.0, 10) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)


def test_macro_f1_weights_classes_equally():
    perfect = np.array([[5, 0], [0, 5]])
    assert macro_f1(perfect) == 1.0
    lopsided = np.array([[90, 0], [10, 0]])  # always predicts class 0: accuracy 0.9, macro-F1 far lower
    assert macro_f1(lopsided) == pytest.approx((2 * 90 / 190) / 2)


def test_config_round_trips_and_rejects_unknown_or_bad_values():
    assert TrialConfig.from_dict(CONFIG).to_dict() == CONFIG
    with pytest.raises(UsageError, match="unknown keys \\['momentum'\\]"):
        TrialConfig.from_dict({**CONFIG, "momentum": 0.9})
    with pytest.raises(UsageError, match="freeze_depth must be 0..5, got 7"):
        TrialConfig.from_dict({**CONFIG, "freeze_depth": 7})


def test_images_reads_batches_across_parts_in_requested_order():
    a = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    b = a[::-1].copy() + 100
    data = Images([(a, np.array([0, 0, 1, 1])), (b, np.array([1, 0, 1, 0]))])
    x, y = data.batch(np.array([5, 0, 3]))
    assert len(data) == 8
    assert y.tolist() == [0, 0, 1]
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 2, 2)
    assert np.array_equal(x[0].permute(1, 2, 0).numpy(), b[1])
    assert np.array_equal(x[1].permute(1, 2, 0).numpy(), a[0])


def test_steps_per_epoch_counts_the_training_batches():
    rng = np.random.default_rng(0)
    for n, bs in ((10, 4), (9, 4), (8, 4), (1, 4), (33, 16)):
        assert steps_per_epoch(n, bs) == sum(1 for _ in batches(n, bs, rng))

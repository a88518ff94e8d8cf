import torch

from trainables import augment


def _batch():
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_strength_zero_changes_nothing():
    x = _batch()
    assert torch.equal(augment(x.clone(), 0.0, torch.Generator().manual_seed(1)), x)


def test_strength_one_changes_every_image_and_stays_in_range():
    x = _batch()
    y = augment(x.clone(), 1.0, torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    per_image = (y - x).abs().flatten(1).mean(1)
    assert bool((per_image > 0.01).all()), per_image


def test_more_strength_changes_images_more_and_seed_repeats():
    x = _batch()
    weak = augment(x.clone(), 0.1, torch.Generator().manual_seed(2))
    strong = augment(x.clone(), 1.0, torch.Generator().manual_seed(2))
    assert (weak - x).abs().mean() < (strong - x).abs().mean()
    assert torch.equal(strong, augment(x.clone(), 1.0, torch.Generator().manual_seed(2)))

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


def test_the_training_view_is_the_input_size_and_zooms_out_into_real_pixels_beyond_the_centre_crop():
    from trainables import Preprocess

    x = torch.zeros(64, 3, 40, 40)
    x[..., :2, :] = 1.0  # a bright band along the top, outside the centre crop of 35 px (rows 2 to 36)
    prep = Preprocess(crop_pct=0.875, size=35)
    trained = prep.train_view(x, 1.0, torch.Generator().manual_seed(0))
    assert trained.shape == (64, 3, 35, 35) and prep.view(x).max() == 0
    assert (trained.amax(dim=(1, 2, 3)) > 0.5).sum() >= 8, "shifted and zoomed-out views show the band"

import numpy as np
import pytest
import torch
from torch import nn

from trainables import MAX_FREEZE_DEPTH, build_model, freeze, stage_names, train_mode

BACKBONES = ["resnet10t", "mobilenetv3_small_050", "test_efficientnet"]


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_each_depth_freezes_a_longer_prefix_and_the_head_always_trains(backbone):
    model = build_model(backbone, num_classes=3)
    head = {n for n, _ in model.named_parameters() if n.startswith(("fc.", "classifier."))}
    everything = {n for n, _ in model.named_parameters()}
    counts = []
    for depth in range(MAX_FREEZE_DEPTH + 1):
        freeze(model, depth)
        trainable = _trainable(model)
        assert head <= trainable
        counts.append(len(trainable))
        if depth == 0:
            assert trainable == everything
        elif depth == MAX_FREEZE_DEPTH:
            assert trainable == head
        else:
            stage = stage_names(model)[depth - 1]
            assert not any(n.startswith(stage + ".") for n in trainable), f"{stage} should be frozen"
    assert counts == sorted(counts, reverse=True) and len(set(counts)) == len(counts)


def test_resnet_depth_two_freezes_stem_and_layer1_only():
    model = build_model("resnet10t", num_classes=2)
    freeze(model, 2)
    trainable = _trainable(model)
    assert not any(n.startswith(("conv1.", "bn1.", "layer1.")) for n in trainable)
    assert any(n.startswith("layer2.") for n in trainable)


@pytest.mark.parametrize("depth", range(MAX_FREEZE_DEPTH + 1))
def test_frozen_batchnorm_keeps_its_statistics_while_the_rest_trains(depth):
    torch.manual_seed(0)
    model = build_model("resnet10t", num_classes=2)
    freeze(model, depth)
    train_mode(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    frozen = [m for m in bns if not m.weight.requires_grad]
    live = [m for m in bns if m.weight.requires_grad]
    assert all(not m.training for m in frozen) and all(m.training for m in live)
    before = [m.running_mean.clone() for m in bns]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    optimizer.step()
    for m, old in zip(bns, before, strict=True):
        assert torch.equal(m.running_mean, old) == (m in frozen)


def test_kept_statistics_stay_put_while_every_batchnorm_scale_and_shift_trains():
    torch.manual_seed(0)
    model = build_model("resnet10t", num_classes=2)
    nn.init.normal_(model.fc.weight)  # a fitted head, as LP-FT has: the zero head passes no gradient back
    freeze(model, 0)
    train_mode(model, keep_statistics=True)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [(m.running_mean.clone(), m.weight.detach().clone()) for m in bns]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    optimizer.step()
    assert all(torch.equal(m.running_mean, mean) for m, (mean, _) in zip(bns, before, strict=True))
    moved = [not torch.equal(m.weight, weight) for m, (_, weight) in zip(bns, before, strict=True)]
    assert sum(moved) > len(bns) / 2  # a block's last BatchNorm starts at zero: the branch before it waits a step


def test_pretrained_state_dict_is_loaded_except_the_head():
    source = build_model("resnet10t", num_classes=1000)
    model = build_model("resnet10t", num_classes=2, state_dict=source.state_dict())
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert model.fc.weight.shape == (2, model.fc.in_features)


def test_backbone_without_five_stages_is_refused_with_advice():
    model = build_model("test_vit", num_classes=2)
    with pytest.raises(ValueError, match="freeze_depth needs 5"):
        freeze(model, 2)


@pytest.mark.parametrize("backbone", ["resnet10t", "efficientnet_b0"])
def test_preprocessing_follows_the_pretrained_config(backbone):
    from timm.data import resolve_model_data_config

    from trainables import preprocessing

    model = build_model(backbone, num_classes=2)
    cfg = resolve_model_data_config(model)
    prep = preprocessing(model, 48)
    assert prep.size == 48 and prep.mean == tuple(cfg["mean"]) and prep.std == tuple(cfg["std"])
    assert prep.crop_pct == cfg["crop_pct"] and prep.interpolation == cfg["interpolation"]


def test_the_models_input_is_stock_timms_evaluation_transform_of_the_file(tmp_path):
    """Decoded once at timm's resize size and centre-cropped at load, an image reaches the model exactly as timm's own
    evaluation transform (resize the shorter side to size / crop_pct, centre crop) gives it: no pixel upsampled."""
    from PIL import Image
    from timm.data import create_transform

    from datasets import decode, decoded_size
    from trainables import Preprocess

    coarse = np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((300, 300), Image.BICUBIC).save(tmp_path / "photo.png")
    size, mean, std = 64, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    stock = create_transform(input_size=(3, size, size), crop_pct=0.875, interpolation="bicubic", mean=mean, std=std)
    expected = stock(Image.open(tmp_path / "photo.png").convert("RGB"))

    pixels, _, _ = decode(str(tmp_path / "photo.png"), decoded_size(size))
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
    prep = Preprocess(mean, std, crop_pct=0.875, interpolation="bicubic", size=size)
    assert pixels.shape == (73, 73, 3) and prep.crop(73) == size
    assert torch.equal(prep(x)[0], expected)
    assert torch.equal(prep.train_view(x, 0.0, torch.Generator()), prep.view(x)), "no augmentation: the eval view"


def test_a_wider_crop_pct_keeps_more_of_the_stored_image_downsampled_to_the_input():
    from trainables import Preprocess

    x = torch.zeros(1, 3, 40, 40)
    x[..., :, :2] = 1.0  # a bright strip at the left edge, outside the default centre crop
    default = Preprocess(crop_pct=0.875, size=35).view(x)
    whole = Preprocess(crop_pct=1.0, size=35).view(x)
    assert default.shape == whole.shape == (1, 3, 35, 35)
    assert default.max() == 0 and whole[..., 0].mean() > 0.5, "crop_pct 1.0 sees the whole stored side"


@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_new_head_starts_with_every_class_equal(backbone):
    model = build_model(backbone, num_classes=2).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 3, 32, 32))
    assert torch.equal(logits, torch.zeros_like(logits))

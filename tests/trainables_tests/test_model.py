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
    prep = preprocessing(model)
    assert prep.mean == tuple(cfg["mean"]) and prep.std == tuple(cfg["std"])
    assert prep.crop_pct == cfg["crop_pct"] and prep.interpolation == cfg["interpolation"]


def test_the_eval_view_keeps_the_centre_crop_pct_of_the_image():
    from trainables import Preprocess

    x = torch.zeros(1, 3, 40, 40)
    x[..., 10:30, 10:30] = 1.0  # a bright centre square, half the side
    wide = Preprocess(crop_pct=1.0).view(x)
    tight = Preprocess(crop_pct=0.5, interpolation="bilinear").view(x)
    assert torch.equal(wide, x)
    assert tight.shape == x.shape and tight.mean() > 0.9  # the centre fills the view


@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_new_head_starts_with_every_class_equal(backbone):
    model = build_model(backbone, num_classes=2).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 3, 32, 32))
    assert torch.equal(logits, torch.zeros_like(logits))

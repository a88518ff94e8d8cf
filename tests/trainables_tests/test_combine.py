"""Soups, ensemble selection and test-time augmentation on real timm models and decoded images."""

import numpy as np
import pytest
import timm
import torch

from datasets import build_cache, scan_folder
from trainables import Images, preprocessing
from trainables.combine import (
    FlipAverage,
    average_weights,
    greedy_ensemble,
    greedy_soup,
    probabilities,
)

SIZE = 32


def _model(seed: int) -> torch.nn.Module:
    """resnet10t with a random (not zero) head, so that its predictions differ from image to image."""
    torch.manual_seed(seed)
    model = timm.create_model("resnet10t", num_classes=2)
    torch.nn.init.normal_(model.get_classifier().weight, std=1.0)
    return model.eval()


@pytest.fixture(scope="module")
def val_images(tiny_eggs, tmp_path_factory) -> Images:
    cache = build_cache(scan_folder(tiny_eggs), SIZE, tmp_path_factory.mktemp("variants-cache"))
    return Images([cache.load("val"), cache.load("test")])


def _accuracy_against(reference: torch.nn.Module, images: Images):
    """Accuracy of a resnet10t state on ``images``, against the labels ``reference`` gives them (its own
    accuracy is 1.0 then, and every other model's is measured from it); its head's bias is set first so that it
    gives half the images each class."""
    prep = preprocessing(reference, SIZE)
    p = probabilities(reference, images, prep)
    margin = np.log(p[:, 1]) - np.log(p[:, 0])
    with torch.no_grad():
        reference.get_classifier().bias[1] -= float(np.median(margin))
    labels = probabilities(reference, images, prep).argmax(1)
    assert 0.3 < labels.mean() < 0.7

    def accuracy(state: dict) -> float:
        model = timm.create_model("resnet10t", num_classes=2)
        model.load_state_dict(state)
        return float((probabilities(model.eval(), images, prep).argmax(1) == labels).mean())

    return accuracy


def _with_head(state: dict, scale: float) -> dict:
    return {k: v * scale if k.startswith("fc.") else v for k, v in state.items()}


def test_the_soups_weights_are_the_average_of_its_members_weights():
    states = [_model(seed).state_dict() for seed in (0, 1, 2)]
    soup = average_weights(states)
    for key, value in soup.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(s[key] for s in states) / 3)
        else:  # BatchNorm's counter is not a weight
            assert torch.equal(value, states[0][key])
        assert value.dtype == states[0][key].dtype
    assert not torch.equal(soup["conv1.0.weight"], states[0]["conv1.0.weight"])


def test_a_member_that_lowers_validation_accuracy_is_not_added_and_one_that_keeps_it_is(val_images):
    good = _model(0)
    accuracy = _accuracy_against(good, val_images)
    state = good.state_dict()
    flipped = _with_head(state, -1.0)  # averaged with the best, its head cancels: every image gets one class
    louder = _with_head(state, 3.0)  # the same predictions, so the soup keeps its accuracy
    assert accuracy(average_weights([state, flipped])) < 1.0, "the flipped head must hurt, or the test shows nothing"
    members, score, weights = greedy_soup([("best", state), ("flipped", flipped), ("louder", louder)], accuracy)
    assert members == ["best", "louder"] and score == 1.0
    for key, value in weights.items():  # the soup returned is the average of the members kept
        torch.testing.assert_close(value, average_weights([state, louder])[key])


def test_ensemble_selection_adds_the_member_that_fixes_the_others_mistakes_and_stops_when_nothing_helps():
    labels = np.array([0, 0, 1, 1])
    first_half = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])  # right on the first two images
    second_half = np.array([[0.4, 0.6], [0.4, 0.6], [0.1, 0.9], [0.1, 0.9]])  # right on the last two
    unsure = np.full((4, 2), 0.5)
    members, accuracy = greedy_ensemble({"a": first_half, "b": second_half, "c": unsure}, labels, size=5)
    assert members == {"a": 1, "b": 1} and accuracy == 1.0
    # with replacement: a candidate may be picked twice, and then weighs twice
    members, _ = greedy_ensemble({"a": first_half, "a_noisy": first_half * 0.99 + 0.005}, labels, size=2)
    assert members == {"a": 1}, "no second member when none raises the accuracy"


def test_tta_averages_the_image_and_its_left_right_mirror(val_images):
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            seen.append(x.clone())
            return self.model(x)

    model = _model(3)
    x = torch.rand(2, 3, SIZE, SIZE)
    out = FlipAverage(Recorder(model))(x)
    plain, mirrored = seen
    assert torch.equal(plain, x) and torch.equal(mirrored[..., :, 0], x[..., :, -1])  # columns reversed, rows kept
    assert torch.equal(mirrored[..., 0, :], x[..., 0, :].flip(-1))
    with torch.no_grad():
        expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    torch.testing.assert_close(out.softmax(1), expected)
    # on real images the mirrored view changes the probabilities; a left-right symmetric image's stay the same
    prep = preprocessing(model, SIZE)
    assert not np.allclose(probabilities(model, val_images, prep), probabilities(model, val_images, prep, tta=True))
    pixels = np.asarray(val_images.batch(np.arange(4))[0].permute(0, 2, 3, 1))
    left = pixels[:, :, : pixels.shape[2] // 2]
    symmetric = np.ascontiguousarray(np.concatenate([left, left[:, :, ::-1]], axis=2))
    mirror_image = Images([(symmetric, np.zeros(4, np.int64))])
    np.testing.assert_allclose(
        probabilities(model, mirror_image, prep), probabilities(model, mirror_image, prep, tta=True), atol=1e-5
    )

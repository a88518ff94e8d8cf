"""LogME ranks features by how well a linear model can tell the classes apart from them."""

import numpy as np

from trainables import logme


def _features(separation: float, n: int = 200, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    centres = rng.normal(size=(4, d)) * separation
    return centres[labels] + rng.normal(size=(n, d)), labels


def test_features_that_separate_the_classes_score_higher():
    scores = [logme(*_features(s)) for s in (0.0, 0.5, 2.0)]
    assert scores[0] < scores[1] < scores[2]


def test_more_features_than_images_still_give_a_finite_ranking():
    noise, labels = _features(0.0, n=40, d=200)
    signal, _ = _features(3.0, n=40, d=200)
    assert np.isfinite(logme(noise, labels)) and logme(signal, labels) > logme(noise, labels)

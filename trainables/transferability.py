"""LogME (You et al., ICML 2021): how well a frozen backbone's features will transfer, from the features alone.

The score is the log marginal evidence of a Bayesian linear model from the features to each class's one-hot
target, per image and averaged over classes; higher is better. It needs no training and no hyperparameters: the
prior's and the noise's precisions are found by MacKay's fixed-point iteration.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_ITERATIONS", "logme"]

MAX_ITERATIONS = 20


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """The LogME score of ``features [N, D]`` for integer ``labels [N]``."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = np.zeros(d)
    sigma[: len(s)] = s**2  # the eigenvalues of F^T F; zero beyond rank N
    classes = np.unique(labels)
    return float(np.mean([_evidence(u, s, sigma, (labels == c).astype(np.float64), n, d) for c in classes]))


def _evidence(u: np.ndarray, s: np.ndarray, sigma: np.ndarray, y: np.ndarray, n: int, d: int) -> float:
    """Evidence per image of the linear model y = F m + noise, m ~ N(0, 1/alpha), noise ~ N(0, 1/beta)."""
    uy = u.T @ y  # y in the basis of F's left singular vectors
    residual_out = float(y @ y - uy @ uy)  # the part of y that no linear map of F reaches
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITERATIONS):
        shrink = beta * sigma[: len(s)] / (alpha + beta * sigma[: len(s)])
        gamma = float(shrink.sum())
        m_norm2 = float(np.sum((beta * s * uy / (alpha + beta * s**2)) ** 2))
        fit_error = float(np.sum(((1 - shrink) * uy) ** 2)) + residual_out
        new_alpha = gamma / (m_norm2 + 1e-10)
        new_beta = (n - gamma) / (fit_error + 1e-10)
        converged = abs(new_alpha / new_beta - alpha / beta) <= 0.01 * alpha / beta
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    shrink = beta * sigma[: len(s)] / (alpha + beta * sigma[: len(s)])
    m_norm2 = float(np.sum((beta * s * uy / (alpha + beta * s**2)) ** 2))
    fit_error = float(np.sum(((1 - shrink) * uy) ** 2)) + residual_out
    evidence = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - 0.5 * np.sum(np.log(alpha + beta * sigma))
        - beta / 2 * fit_error
        - alpha / 2 * m_norm2
        - n / 2 * np.log(2 * np.pi)
    )
    return float(evidence / n)

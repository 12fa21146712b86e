"""Fréchet distance (FID) and kernel distance (KID) between two sets of feature vectors.

Both work on features already extracted (see ``features.py``), so real-image features can be cached and
shared between FID, KID and memorization. FID follows torchmetrics' computation in float64:
``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 * sum(sqrt(eig(S1 @ S2)))`` (the trace of the matrix square root of
``S1 S2`` is the sum of the square roots of its eigenvalues), which stays defined when there are fewer samples
than feature dimensions. KID is the unbiased squared MMD with the cubic polynomial kernel
``(x.y / d + 1)^3``, averaged over random subsets drawn from a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class GaussianStats:
    """Mean and (unbiased, N-1) covariance of a feature set, float64."""

    mu: torch.Tensor
    sigma: torch.Tensor
    n: int


def gaussian_stats(features: np.ndarray | torch.Tensor) -> GaussianStats:
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors [N, D], got shape {tuple(x.shape)}")
    mu = x.mean(dim=0)
    centered = x - mu
    sigma = centered.T @ centered / (x.shape[0] - 1)
    return GaussianStats(mu, sigma, int(x.shape[0]))


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """Squared Fréchet distance between the Gaussians fitted to two feature sets."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature dimensions differ: {tuple(a.mu.shape)} vs {tuple(b.mu.shape)}")
    mean_term = (a.mu - b.mu).square().sum()
    trace_term = a.sigma.trace() + b.sigma.trace()
    # eigenvalues of a product of two PSD matrices are real and >= 0; round-off makes some slightly complex
    # or negative, whose square roots are (nearly) imaginary and drop out with .real
    cross = torch.linalg.eigvals(a.sigma @ b.sigma).sqrt().real.sum()
    return float(mean_term + trace_term - 2.0 * cross)


def fid_from_features(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    return frechet_distance(gaussian_stats(real), gaussian_stats(fake))


def polynomial_mmd2(x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None,
                    coef: float = 1.0) -> float:  # fmt: skip
    """Unbiased MMD^2, kernel ``(gamma * x.y + coef)^degree`` (``gamma`` default 1/d); sizes may differ."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError("each set needs at least 2 feature vectors")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k_xx = (x @ x.T * gamma + coef) ** degree
    k_yy = (y @ y.T * gamma + coef) ** degree
    k_xy = (x @ y.T * gamma + coef) ** degree
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


@dataclass(frozen=True)
class KIDResult:
    mean: float
    std: float
    subsets: int
    subset_size: int


def kid_from_features(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
) -> KIDResult:
    """KID over ``subsets`` random subsets of ``min(subset_size, n_real, n_fake)`` vectors from each set.

    When the subset covers both sets entirely there is only one possible subset and it is computed once.
    """
    x = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError(
            f"KID needs at least 2 real and 2 generated feature vectors, got {x.shape[0]} and {y.shape[0]}"
        )
    if size == x.shape[0] == y.shape[0]:
        value = polynomial_mmd2(x, y, degree, gamma, coef)
        return KIDResult(value, 0.0, 1, size)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(max(1, subsets)):
        ix = torch.as_tensor(rng.choice(x.shape[0], size, replace=False))
        iy = torch.as_tensor(rng.choice(y.shape[0], size, replace=False))
        values.append(polynomial_mmd2(x[ix], y[iy], degree, gamma, coef))
    arr = np.asarray(values)
    return KIDResult(float(arr.mean()), float(arr.std()), len(arr), size)  # population std, as torchmetrics

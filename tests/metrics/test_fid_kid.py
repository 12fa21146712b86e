"""FID and KID on feature vectors, checked against independent numpy/scipy and torchmetrics computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import poly_mmd

from cxr_ldm.metrics.fid import fid_from_features, gaussian_stats, kid_from_features, polynomial_mmd2


def features(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated features, as network features are
    return (rng.normal(size=(n, d)) @ mixing * scale + shift).astype(np.float32)


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula (pytorch-fid style): ||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


class Passthrough(torch.nn.Module):
    """torchmetrics' FID with ``feature=`` this module: its "images" are already the feature vectors."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_fid_of_a_set_against_itself_is_zero():
    for n, d in ((300, 16), (40, 64)):  # also fewer samples than dimensions (singular covariance)
        x = features(n, d, seed=1)
        scale = np.trace(np.cov(x, rowvar=False))
        assert abs(fid_from_features(x, x)) < 1e-6 * scale


@pytest.mark.parametrize("n_real,n_fake,d", [(400, 300, 32), (200, 200, 8)])
def test_fid_matches_scipy_and_torchmetrics(n_real: int, n_fake: int, d: int):
    real = features(n_real, d, seed=2)
    fake = features(n_fake, d, seed=3, shift=0.3, scale=1.2)
    ours = fid_from_features(real, fake)
    assert ours > 0.1
    assert ours == pytest.approx(scipy_fid(real, fake), rel=1e-6)

    metric = FrechetInceptionDistance(feature=Passthrough(d))
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    assert ours == pytest.approx(float(metric.compute()), rel=1e-5)


def test_gaussian_stats_are_mean_and_unbiased_covariance():
    x = features(50, 6, seed=4)
    stats = gaussian_stats(x)
    np.testing.assert_allclose(stats.mu.numpy(), x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma.numpy(), np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10)
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(x[:1])


def numpy_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the KID kernel (x.y/d + 1)^3, by explicit loops over pairs."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return float(kxx + kyy - 2 * kxy)


def test_kid_matches_explicit_pair_loops_and_torchmetrics():
    real = features(30, 12, seed=5)
    fake = features(30, 12, seed=6, shift=0.5)
    kid = kid_from_features(real, fake, subsets=50, subset_size=1000)
    assert (kid.subsets, kid.subset_size, kid.std) == (1, 30, 0.0)  # the only subset: both whole sets
    assert kid.mean == pytest.approx(numpy_mmd2(real, fake), rel=1e-9)
    assert kid.mean == pytest.approx(
        float(poly_mmd(torch.from_numpy(real).double(), torch.from_numpy(fake).double())), rel=1e-9
    )
    # sets of different sizes (torchmetrics requires equal sizes; the unbiased estimator does not)
    assert polynomial_mmd2(
        torch.from_numpy(real).double(), torch.from_numpy(fake[:17]).double()
    ) == pytest.approx(numpy_mmd2(real, fake[:17]), rel=1e-9)


def test_kid_subsets_are_seeded_and_average_the_subset_estimates():
    real, fake = features(60, 8, seed=7), features(50, 8, seed=8, shift=0.4)
    a = kid_from_features(real, fake, subsets=5, subset_size=20, seed=3)
    b = kid_from_features(real, fake, subsets=5, subset_size=20, seed=3)
    c = kid_from_features(real, fake, subsets=5, subset_size=20, seed=4)
    assert a == b and a.mean != c.mean
    assert (a.subsets, a.subset_size) == (5, 20)
    rng = np.random.default_rng(3)
    values = []
    for _ in range(5):
        ix, iy = rng.choice(60, 20, replace=False), rng.choice(50, 20, replace=False)
        values.append(numpy_mmd2(real[ix], fake[iy]))
    assert a.mean == pytest.approx(np.mean(values), rel=1e-9)
    assert a.std == pytest.approx(np.std(values), rel=1e-9)
    assert kid_from_features(real, fake, subsets=2, subset_size=500).subset_size == 50  # capped by the sets

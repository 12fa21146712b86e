"""PRDC through the ``prdc`` package equals a straightforward numpy computation of Naeem et al.'s definitions."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_ldm.metrics.prdc import prdc_from_features


def reference_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """The paper's formulas, written out: balls of radius "distance to the k-th nearest other point"."""
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    d_rr, d_ff, d_rf = dist(real, real), dist(fake, fake), dist(real, fake)
    r_real = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside_real = d_rf < r_real[:, None]  # [i, j]: fake j in the ball of real i
    inside_fake = d_rf < r_fake[None, :]  # [i, j]: real i in the ball of fake j
    return {
        "precision": float(np.mean([inside_real[:, j].any() for j in range(len(fake))])),
        "recall": float(np.mean([inside_fake[i, :].any() for i in range(len(real))])),
        "density": float(np.mean([inside_real[:, j].sum() / k for j in range(len(fake))])),
        "coverage": float(np.mean([d_rf[i].min() < r_real[i] for i in range(len(real))])),
    }


@pytest.mark.parametrize("shift", [0.0, 0.7, 3.0])
def test_equals_the_written_out_definitions(shift: float):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 8))
    fake = rng.normal(size=(45, 8)) * 1.3 + shift
    ours = prdc_from_features(real, fake, nearest_k=5)
    ref = reference_prdc(real, fake, 5)
    for name, value in ref.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name
    assert (ours["nearest_k"], ours["n_real"], ours["n_fake"]) == (5, 60, 45)
    assert ours["implementation"].startswith("prdc 0.2")


def test_hand_computed_case():
    """1-D, k = 1. Real 0, 1, 3: radii 1, 1, 2. Fake 0.5, 10, 11: radii 9.5, 1, 1.
    0.5 is in the balls of 0 and 1 (not 3: |3 - 0.5| = 2.5 > 2); 10 and 11 in none.
    precision 1/3, density (2 + 0 + 0) / 3 = 2/3, coverage: real 0 and 1 have 0.5 inside, 3 does not: 2/3;
    recall: every real point is within 9.5 of 0.5: 1."""
    out = prdc_from_features(np.array([[0.0], [1.0], [3.0]]), np.array([[0.5], [10.0], [11.0]]), nearest_k=1)
    assert out["precision"] == pytest.approx(1 / 3)
    assert out["density"] == pytest.approx(2 / 3)
    assert out["coverage"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(1.0)


def test_identical_sets_are_perfect_and_far_sets_are_zero():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(30, 4))
    same = prdc_from_features(real, real.copy())
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = prdc_from_features(real, real + 100.0)
    assert far["precision"] == far["recall"] == far["coverage"] == far["density"] == 0.0


def test_too_few_images_is_a_clear_error():
    with pytest.raises(ValueError, match="nearest_k=5 needs at least 7 real and generated images, got 6 real"):
        prdc_from_features(np.zeros((6, 3)), np.zeros((9, 3)))
    with pytest.raises(ValueError, match="of one dimension"):
        prdc_from_features(np.zeros((9, 3)), np.zeros((9, 4)))

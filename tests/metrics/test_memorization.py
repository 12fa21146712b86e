"""Nearest-training-image distances and near-copies, against a brute-force numpy computation."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_ldm.metrics.memorization import memorization_report, nearest_neighbours


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def brute_force(q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    sims = qn @ rn.T
    return 1.0 - sims.max(axis=1), sims.argmax(axis=1)


def test_nearest_neighbours_match_brute_force_in_any_chunking():
    q, r = unit_rows(15, 8, 0), unit_rows(40, 8, 1)
    expected_d, expected_i = brute_force(q, r)
    for chunk in (7, 40, 1000):
        d, i = nearest_neighbours(q, r, chunk_size=chunk)
        np.testing.assert_array_equal(i, expected_i)
        np.testing.assert_allclose(d, expected_d, atol=1e-6)
    with pytest.raises(ValueError, match="no reference"):
        nearest_neighbours(q, r[:0])


def test_planted_copies_are_listed_first():
    train = unit_rows(50, 16, 2)
    real_test = unit_rows(30, 16, 3)
    generated = unit_rows(12, 16, 4)
    generated[3] = train[17] * 1.5  # a copy (cosine distance 0: scale does not matter)
    generated[8] = train[5] + 0.01 * unit_rows(1, 16, 5)[0]  # a near-copy
    report = memorization_report(
        generated, real_test, train, quantile=0.05, max_listed=5,
        generated_ids=[f"g{k}" for k in range(12)], train_ids=[f"t{k}" for k in range(50)],
        generated_prompts=[f"p{k}" for k in range(12)],
    )  # fmt: skip
    real_d, _ = brute_force(real_test, train)
    assert report["threshold"] == pytest.approx(np.quantile(real_d, 0.05), abs=1e-6)
    listed = report["near_copies"]
    assert [c["generated_id"] for c in listed[:2]] == ["g3", "g8"]
    assert [c["train_id"] for c in listed[:2]] == ["t17", "t5"]
    assert listed[0]["distance"] == pytest.approx(0.0, abs=1e-6) and listed[0]["prompt"] == "p3"
    assert report["n_near_copies"] == len(listed) >= 2
    assert report["generated_to_train"]["n"] == 12 and report["real_test_to_train"]["n"] == 30
    gen_d, _ = brute_force(generated, train)
    assert report["generated_to_train"]["quantiles"]["0.5"] == pytest.approx(np.median(gen_d), abs=1e-6)

    fixed = memorization_report(generated, real_test, train, threshold=1e-3)
    assert fixed["threshold_rule"] == "fixed" and fixed["n_near_copies"] == 2
    assert fixed["fraction_near_copies"] == pytest.approx(2 / 12)

"""Memorization: how close each generated image is to its nearest training image, against a real baseline.

Distances are cosine distances (``1 - cos``) between torchxrayvision DenseNet features (the FID features).
A model that copies training images puts generated images closer to the training set than unseen real
test images are; so the generated nearest-neighbour distances are reported beside the real-test ones, and
a generated image counts as a near-copy when it is closer to a training image than the ``quantile`` of the
real-test distances (or than a fixed ``threshold``). Nearest neighbours are searched in chunks of the
training features, so memory stays bounded for a large training set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def _normalise(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def nearest_neighbours(
    queries: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor, chunk_size: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """``(distance, index)`` of each query's nearest reference vector by cosine distance (``[Q]`` each)."""
    q = _normalise(queries)
    best = torch.full((q.shape[0],), -2.0)
    arg = torch.zeros(q.shape[0], dtype=torch.long)
    ref = torch.as_tensor(np.asarray(reference), dtype=torch.float32)
    if ref.shape[0] == 0:
        raise ValueError("no reference (training) features to compare with")
    for start in range(0, ref.shape[0], chunk_size):
        sims = q @ _normalise(ref[start : start + chunk_size]).T
        value, index = sims.max(dim=1)
        better = value > best
        best[better] = value[better]
        arg[better] = index[better] + start
    return (1.0 - best).clamp_min(0.0).double().numpy(), arg.numpy()


def distribution(values: np.ndarray) -> dict[str, Any]:
    return {
        "n": int(len(values)),
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "quantiles": {f"{q:g}": float(np.quantile(values, q)) for q in QUANTILES},
    }


def memorization_report(
    generated: np.ndarray,
    real_test: np.ndarray,
    train: np.ndarray,
    quantile: float = 0.01,
    threshold: float | None = None,
    max_listed: int = 20,
    generated_ids: Sequence[str] | None = None,
    train_ids: Sequence[str] | None = None,
    generated_prompts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Nearest-training-image distances of generated and real test images, the threshold and the near-copies
    (closest first, at most ``max_listed`` listed; the count covers all of them)."""
    gen_d, gen_i = nearest_neighbours(generated, train)
    real_d, _ = nearest_neighbours(real_test, train)
    if threshold is None:
        threshold = float(np.quantile(real_d, quantile))
        rule = f"{quantile:g} quantile of real-test-to-train distances"
    else:
        threshold = float(threshold)
        rule = "fixed"
    copies = np.flatnonzero(gen_d < threshold)
    copies = copies[np.argsort(gen_d[copies], kind="stable")]
    listed = []
    for k in copies[:max_listed]:
        item: dict[str, Any] = {"generated": int(k), "train": int(gen_i[k]), "distance": float(gen_d[k])}
        if generated_ids is not None:
            item["generated_id"] = str(generated_ids[k])
        if generated_prompts is not None:
            item["prompt"] = str(generated_prompts[k])
        if train_ids is not None:
            item["train_id"] = str(train_ids[gen_i[k]])
        listed.append(item)
    return {
        "distance": "cosine distance (1 - cos) of torchxrayvision DenseNet features2",
        "n_train": int(len(train)),
        "generated_to_train": distribution(gen_d),
        "real_test_to_train": distribution(real_d),
        "threshold": threshold,
        "threshold_rule": rule,
        "n_near_copies": int(len(copies)),
        "fraction_near_copies": float(len(copies) / len(gen_d)),
        "near_copies": listed,
    }

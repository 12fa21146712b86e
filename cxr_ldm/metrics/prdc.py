"""Precision, recall, density and coverage (Naeem et al., ICML 2020) between real and generated features.

Computed by the authors' own package, ``prdc`` (NAVER's ``compute_prdc``, the implementation CheXGenBench
calls, with its k = 5), on features already extracted (RAD-DINO or torchxrayvision), so the real-image
features come from the same cache as FID and KID. Definitions, with ``NND_k(x)`` the distance from a real
feature to its k-th nearest other real feature and ``B(x, r)`` the Euclidean ball:

- precision: share of generated features inside at least one real ball ``B(x_i, NND_k(x_i))``;
- recall: share of real features inside at least one generated ball ``B(y_j, NND_k(y_j))``;
- density: mean over generated features of the number of real balls containing them, divided by k
  (not bounded by 1; about 1 when both sets come from one distribution);
- coverage: share of real features whose ball contains at least one generated feature.

Memory: the package holds the full ``n_real x n_real``, ``n_fake x n_fake`` and ``n_real x n_fake`` distance
matrices (1,000 vs 1,000 float64 features: 24 MB).
"""

from __future__ import annotations

import contextlib
import io
from importlib.metadata import version
from typing import Any

import numpy as np

NEAREST_K = 5


def prdc_from_features(
    real: np.ndarray, fake: np.ndarray, nearest_k: int = NEAREST_K
) -> dict[str, Any]:
    """``{"precision", "recall", "density", "coverage"}`` (floats) plus ``nearest_k``, ``n_real``,
    ``n_fake`` and ``implementation``: what ``metrics.json`` stores under ``prdc``."""
    from prdc import compute_prdc

    x = np.asarray(real, dtype=np.float64)
    y = np.asarray(fake, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two feature sets [N, D] of one dimension, got {x.shape} and {y.shape}")
    if min(len(x), len(y)) < nearest_k + 2:  # the package's np.argpartition(kth=nearest_k + 1) needs them
        raise ValueError(
            f"prdc with nearest_k={nearest_k} needs at least {nearest_k + 2} real and generated images, "
            f"got {len(x)} real and {len(y)} generated"
        )
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints the set sizes
        values = compute_prdc(real_features=x, fake_features=y, nearest_k=nearest_k)
    return {
        **{name: float(values[name]) for name in ("precision", "recall", "density", "coverage")},
        "nearest_k": int(nearest_k),
        "n_real": int(len(x)),
        "n_fake": int(len(y)),
        "implementation": f"prdc {version('prdc')} (Naeem et al. 2020), Euclidean distances",
    }

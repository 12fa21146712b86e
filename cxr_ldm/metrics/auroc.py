"""The area under the ROC curve of scores against binary labels, with one answer for a degenerate label set."""

from __future__ import annotations

import numpy as np
import torch


def auroc(scores: np.ndarray, labels: np.ndarray, degenerate: float | None = None) -> float | None:
    """AUROC of ``scores`` ``[N]`` against ``labels`` ``[N]`` (1 / True positive, 0 / False negative).

    A label set with one class only (all positive, all negative, or empty) has no ROC curve: the result is then
    ``degenerate``, ``None`` unless the caller asks for another value (the phantom classifier's validation
    stores NaN, as its cached files always did).
    """
    from torchmetrics.functional.classification import binary_auroc

    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return degenerate
    return float(binary_auroc(torch.as_tensor(scores, dtype=torch.float32), torch.as_tensor(labels).long()))

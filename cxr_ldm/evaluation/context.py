"""What every measure is handed: the checked inputs, the loaded networks, the generated set, and features.

Features go through one place, :meth:`Context.features`: real and training features are cached on disk
(``cache_dir/features``), keyed by the exact image list, the image size, the network's weights fingerprint and
its preprocessing version, so a sweep of checkpoints against one test set extracts them once; within a run,
every set's features are computed once whichever measures use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from cxr_ldm.evaluation.inputs import Inputs
from cxr_ldm.evaluation.networks import Networks, feature_protocol
from cxr_ldm.metrics.feature_cache import FeatureCache
from cxr_ldm.metrics.features import extract_features
from cxr_ldm.metrics.sources import ImageSet, image_batches


@dataclass
class Context:
    inputs: Inputs
    networks: Networks
    fake: ImageSet | None
    image_size: int
    samples: dict[str, Any] = field(default_factory=dict)
    prompt_sources: list[int] | None = None  # per generated image: its prompt's row of inputs.texts (or -1)
    cache: FeatureCache = field(init=False)
    _memo: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        root = self.inputs.cache_dir
        self.cache = FeatureCache(root / "features" if root else None)

    @property
    def cfg(self) -> DictConfig:
        return self.inputs.cfg

    @property
    def real(self) -> ImageSet:
        assert self.inputs.real is not None
        return self.inputs.real

    @property
    def real_eval(self) -> ImageSet:
        return self.inputs.real_eval

    @property
    def generated(self) -> ImageSet:
        assert self.fake is not None
        return self.fake

    @property
    def progress(self) -> bool:
        return self.inputs.progress

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    @property
    def seed(self) -> int:
        return self.inputs.seed

    def batches(self, images: ImageSet):
        """``[B, 1, S, S]`` float batches in 0..1 at the evaluation size, in set order."""
        return image_batches(images, self.image_size, self.inputs.batch_size, self.inputs.num_workers)

    def load_all(self, images: ImageSet, desc: str) -> torch.Tensor:
        """uint8 ``[N, 1, S, S]``: the one place a whole set is held (pairwise MS-SSIM needs it)."""
        out = []
        for batch in tqdm(self.batches(images), desc=desc, unit="batch", disable=not self.progress):
            out.append((batch * 255.0).round().to(torch.uint8))
        return torch.cat(out)

    def features(self, images: ImageSet, role: str, kind: str = "xrv") -> tuple[np.ndarray, str]:
        """``(features [N, D], cache status)`` of ``images`` by the ``kind`` network; ``role`` is ``generated``
        (never cached: it changes with every model), ``real`` or ``train``."""
        extractor = self.networks.get(kind)
        fingerprint = getattr(extractor, "fingerprint", None) or getattr(extractor, "weights_label", "")
        parts = {
            "images": images.identity,
            "image_size": self.image_size,
            "weights": fingerprint,
            "protocol": feature_protocol(kind),
        }
        memo_key = json.dumps(parts, sort_keys=True, default=str)
        if memo_key in self._memo:
            return self._memo[memo_key]

        def compute() -> dict[str, np.ndarray]:
            feats = extract_features(extractor, self.batches(images), total=len(images),
                                     desc=f"{kind} features ({role})", progress=self.progress)  # fmt: skip
            return {"features": feats}

        if role == "generated" or self.cache.root is None:
            status = "not cached" if role == "generated" else "cache disabled"
            features = compute()["features"]
        else:
            arrays, hit = self.cache.get_or_compute(f"{role}_features", parts, compute)
            features, status = arrays["features"], "hit" if hit else "miss (stored)"
        self._memo[memo_key] = (features, status)
        return features, status

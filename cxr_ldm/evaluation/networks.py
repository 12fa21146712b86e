"""The networks the chosen measures run, loaded from their weights options before any sampling.

A missing weights file therefore stops the command before minutes of sampling are spent. Each network is
loaded by its own module in ``cxr_ldm/metrics/`` (which never downloads unless asked and labels random weights);
this module only maps options to those loaders and records, per network, what keys its cached features.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from cxr_ldm.evaluation.inputs import EvaluationError, option, path_option
from cxr_ldm.metrics.features import FEATURE_PROTOCOL, XRV_WEIGHTS, XRVFeatureExtractor

KINDS = ("xrv", "inception", "raddino", "alignment", "reid")
XRV_FEATURES_NAME = (
    f"torchxrayvision DenseNet-121 {XRV_WEIGHTS} features2 (1024-d): 1 channel, 224 px, [-1024, 1024]"
)


@dataclass
class Networks:
    """One slot per kind; ``None`` where no chosen measure needs it."""

    xrv: XRVFeatureExtractor | None = None
    inception: nn.Module | None = None
    raddino: nn.Module | None = None
    alignment: nn.Module | None = None
    reid: nn.Module | None = None

    def get(self, kind: str) -> Any:
        network = getattr(self, kind)
        if network is None:
            raise RuntimeError(f"the {kind} network was not loaded (no chosen measure declared it)")
        return network


def feature_protocol(kind: str) -> str:
    """The preprocessing version of a feature network's cached features (part of their cache key)."""
    if kind == "xrv":
        return FEATURE_PROTOCOL
    if kind == "inception":
        from cxr_ldm.metrics.inception import INCEPTION_PROTOCOL

        return INCEPTION_PROTOCOL
    if kind == "raddino":
        from cxr_ldm.metrics.raddino import RADDINO_PROTOCOL

        return RADDINO_PROTOCOL
    if kind == "reid":
        from cxr_ldm.metrics.reid import REID_PROTOCOL

        return REID_PROTOCOL
    raise ValueError(f"{kind} is not a feature network")


def _load(kind: str, cfg: DictConfig) -> nn.Module:
    if kind == "xrv":
        return XRVFeatureExtractor.load(option(cfg, "xrv_weights"), bool(option(cfg, "allow_random_xrv")))
    if kind == "inception":
        from cxr_ldm.metrics.inception import InceptionFeatureExtractor

        try:
            return InceptionFeatureExtractor(option(cfg, "fid.inception_weights"))
        except (FileNotFoundError, ModuleNotFoundError) as err:
            raise EvaluationError(str(err)) from err
    if kind == "raddino":
        from cxr_ldm.metrics.raddino import RadDinoFeatureExtractor

        return RadDinoFeatureExtractor.load(option(cfg, "raddino_weights"), bool(option(cfg, "allow_random_raddino")),
                                            bool(option(cfg, "raddino_download")), hf_cache_dir(cfg))  # fmt: skip
    if kind == "alignment":
        from cxr_ldm.metrics.alignment import BioViLTAlignment

        return BioViLTAlignment.load(option(cfg, "alignment_weights"), bool(option(cfg, "allow_random_alignment")),
                                     bool(option(cfg, "alignment_download")), hf_cache_dir(cfg))  # fmt: skip
    if kind == "reid":
        from cxr_ldm.metrics.reid import SiameseReID

        return SiameseReID.load(option(cfg, "reid_weights"), bool(option(cfg, "allow_random_reid")), hf_cache_dir(cfg))
    raise ValueError(f"unknown network kind {kind!r}; known: {', '.join(KINDS)}")


def load_networks(kinds: Iterable[str], cfg: DictConfig, device: torch.device) -> Networks:
    """Every network of ``kinds``, on ``device``, in a fixed order (cheap loads and likely errors first)."""
    networks = Networks()
    wanted = set(kinds)
    for kind in KINDS:
        if kind in wanted:
            setattr(networks, kind, _load(kind, cfg).to(device))
    return networks


def hf_cache_dir(cfg: DictConfig) -> Path | None:
    """The Hugging Face cache the RAD-DINO / BioViL-T / re-id loaders look in (``None`` = the library default)."""
    return path_option(cfg, "hf_cache_dir")


def network_protocol(networks: Networks, kind: str) -> dict[str, Any]:
    """What ``metrics.json`` states about a network: which one, which output, the weights and their hash."""
    network = networks.get(kind)
    if hasattr(network, "protocol"):  # RAD-DINO, BioViL-T, re-identification: their own statement
        return dict(network.protocol())
    if kind == "xrv":
        return {"feature_extractor": XRV_FEATURES_NAME, "weights": network.weights_label,
                "weights_sha256": network.fingerprint, "weights_hash_of": "the state dict (names, shapes, values)",
                "protocol": FEATURE_PROTOCOL}  # fmt: skip
    return {"feature_extractor": type(network).__name__, "weights": network.weights_label,
            "weights_sha256": network.fingerprint, "protocol": feature_protocol(kind)}  # fmt: skip


def is_random(networks: Networks, kind: str) -> bool:
    return bool(getattr(networks.get(kind), "is_random", False))

"""Microsoft's RAD-DINO (``microsoft/rad-dino``) as a feature network: CheXGenBench's FID/KID/PRDC features.

RAD-DINO is a DINOv2 ViT-B/14 trained on chest X-rays, published in the transformers layout (``config.json``,
``model.safetensors``, ``preprocessor_config.json``). CheXGenBench (``metrics/fid.py``,
``RadDinoFeatureExtractor``) loads it with ``AutoModel`` / ``AutoImageProcessor``, feeds the processor 8-bit
RGB images and takes ``outputs.pooler_output``. For ``Dinov2Model`` that is the CLS token of the last layer
after the final LayerNorm (``last_hidden_state[:, 0]``, ``last_hidden_state`` being already normalised),
768-d: the feature here too.

Preprocessing is never re-typed: it is the folder's own ``preprocessor_config.json`` read through
``AutoImageProcessor`` (for RAD-DINO a ``BitImageProcessor``: resize, center crop, rescale, normalise). Our
images (``[B, 1, H, W]`` in 0..1) are handed to it as what an 8-bit PNG holds, ``round(x * 255)`` repeated to
three channels (as PIL's ``convert("RGB")``, which is what CheXGenBench's loader does).

Weights: a local folder (``raddino_weights=DIR``), else the Hugging Face cache
(``snapshot_download(local_files_only=True)``); nothing is downloaded unless ``allow_download``. Random
weights (transformers' default ``Dinov2Config``, which is RAD-DINO's ViT-B/14 shape, and the default
processor) only when explicitly allowed, labelled :data:`RANDOM_WEIGHTS_LABEL`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL, MeasurementNetwork, weights_fingerprint
from cxr_ldm.utils.hashing import file_sha256, json_digest

log = logging.getLogger(__name__)

RADDINO_REPO = "microsoft/rad-dino"
# bump when the way images reach the processor changes: cached features carry it in their key
RADDINO_PROTOCOL = "raddino-pooler-output-uint8-round-rgb-repeat-autoimageprocessor-v1"
REQUIRED_FILES = ("config.json", "preprocessor_config.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class RadDinoWeightsError(FileNotFoundError):
    """The RAD-DINO folder is missing or incomplete (or random weights were not explicitly allowed)."""


def _fix_text(repo: str) -> str:
    return (
        f"Download it once where the hub is reachable (`hf download {repo}`, which fills the Hugging Face "
        f"cache, or `hf download {repo} --local-dir DIR`) and pass raddino_weights=DIR, or allow the download "
        "(raddino_download=true). Nothing is downloaded automatically. For plumbing tests only, "
        "allow_random_raddino=true uses random weights (the numbers are then meaningless)."
    )


def _weights_file(folder: Path) -> Path | None:
    return next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)


def _check_folder(folder: Path, origin: str, repo: str) -> Path:
    if not folder.is_dir():
        raise RadDinoWeightsError(f"{origin}: {folder} is not a folder. " + _fix_text(repo))
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if _weights_file(folder) is None:
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise RadDinoWeightsError(
            f"{origin}: {folder} lacks {', '.join(missing)} (a RAD-DINO folder in the transformers layout "
            f"holds config.json, model.safetensors and preprocessor_config.json). " + _fix_text(repo)
        )
    return folder


def find_raddino_folder(
    weights_dir: str | Path | None = None,
    repo: str = RADDINO_REPO,
    cache_dir: str | Path | None = None,
    allow_download: bool = False,
) -> Path | None:
    """The RAD-DINO folder: ``weights_dir`` if given (must be complete), else the Hugging Face cache's
    snapshot of ``repo`` (downloaded first only with ``allow_download``); ``None`` when not cached."""
    if weights_dir:
        return _check_folder(Path(weights_dir).expanduser(), f"raddino_weights={str(weights_dir)!r}", repo)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            repo,
            cache_dir=str(cache_dir) if cache_dir else None,
            local_files_only=not allow_download,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.md"],
        )
    except LocalEntryNotFoundError:
        return None
    return _check_folder(Path(folder), f"the Hugging Face cache's copy of {repo}", repo)


def load_raddino(
    weights_dir: str | Path | None = None,
    allow_random: bool = False,
    allow_download: bool = False,
    repo: str = RADDINO_REPO,
    cache_dir: str | Path | None = None,
) -> tuple[nn.Module, Any, str, str]:
    """``(model, processor, label, sha256)``: an eval-mode ``Dinov2Model`` (``AutoModel``), its
    ``AutoImageProcessor``, the folder path (or :data:`RANDOM_WEIGHTS_LABEL`) and the weights file's sha256
    (for random weights, the state dict's fingerprint). Raises :class:`RadDinoWeightsError` with the fix."""
    from transformers import AutoImageProcessor, AutoModel

    folder = find_raddino_folder(weights_dir, repo, cache_dir, allow_download)
    if folder is None:
        if not allow_random:
            where = cache_dir or "the Hugging Face cache ($HF_HUB_CACHE, default ~/.cache/huggingface/hub)"
            raise RadDinoWeightsError(
                f"RAD-DINO weights not found: no raddino_weights=DIR given and {repo} is not in {where}. "
                + _fix_text(repo)
            )
        from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

        log.warning("RAD-DINO with RANDOM weights: features are for plumbing tests only")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = Dinov2Model(Dinov2Config())
        model.eval()
        return model, BitImageProcessor(), RANDOM_WEIGHTS_LABEL, weights_fingerprint(model)
    model = AutoModel.from_pretrained(str(folder))
    processor = AutoImageProcessor.from_pretrained(str(folder))
    if not hasattr(model, "layernorm") or "Dinov2" not in type(model).__name__:
        raise RadDinoWeightsError(
            f"{folder} holds a {type(model).__name__}, not a DINOv2 model (config.json model_type "
            f"{getattr(model.config, 'model_type', '?')!r}); expected {repo}"
        )
    model.eval()
    return model, processor, str(folder.resolve()), file_sha256(_weights_file(folder))


class RadDinoFeatureExtractor(MeasurementNetwork):
    """0..1 one-channel images ``[B, 1, H, W]`` -> RAD-DINO ``pooler_output`` ``[B, hidden_size]`` (float32).

    ``num_features`` lets torchmetrics' FID/KID take it as ``feature=``; ``fingerprint`` keys cached
    features (weights and preprocessing config); ``protocol()`` is what ``metrics.json`` records.
    """

    def __init__(self, model: nn.Module, processor: Any, weights_label: str, weights_sha256: str) -> None:
        super().__init__()
        self.model = model.eval()
        self.processor = processor
        self.weights_label = weights_label
        self.weights_sha256 = weights_sha256
        self.num_features = int(model.config.hidden_size)

    @classmethod
    def load(
        cls,
        weights_dir: str | Path | None = None,
        allow_random: bool = False,
        allow_download: bool = False,
        cache_dir: str | Path | None = None,
    ) -> RadDinoFeatureExtractor:
        return cls(*load_raddino(weights_dir, allow_random, allow_download, cache_dir=cache_dir))

    @property
    def processor_config(self) -> dict[str, Any]:
        return json.loads(self.processor.to_json_string())

    @property
    def fingerprint(self) -> str:
        """Weights file sha256 plus a hash of the processor settings: part of every cached-feature key."""
        processor = json_digest(self.processor_config, 16, sort_keys=True)
        return f"sha256:{self.weights_sha256}+processor:{processor}"

    def protocol(self) -> dict[str, Any]:
        """What ``metrics.json`` states about these features."""
        return {
            "feature_extractor": f"RAD-DINO ({RADDINO_REPO}, {type(self.model).__name__})",
            "output": "pooler_output (CLS token after the final LayerNorm), as CheXGenBench",
            "n_features": self.num_features,
            "weights": self.weights_label,
            "weights_sha256": self.weights_sha256,
            "preprocessing": "8-bit RGB (round(x*255), gray repeated) -> the folder's "
            f"{type(self.processor).__name__} (preprocessor_config.json)",
            "processor_config": self.processor_config,
            "protocol": RADDINO_PROTOCOL,
        }

    @staticmethod
    def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` in 0..1 -> ``[B, 3, H, W]`` uint8: the pixels an 8-bit PNG read as RGB holds."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(
                f"expected single-channel images [B, 1, H, W] in 0..1, got shape {tuple(images.shape)}"
            )
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(
                f"expected intensities in 0..1, got [{lo:.3g}, {hi:.3g}] (divide 8-bit images by 255)"
            )
        return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` the model sees: the folder's image processor applied to the 8-bit RGB images."""
        rgb = self.to_uint8_rgb(images.to(self.device))
        pixels = self.processor(images=list(rgb), return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, dtype=next(self.model.parameters()).dtype)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=self.preprocess(images))
        return out.pooler_output.float()

"""torchxrayvision's DenseNet-121 as the feature network of FID, KID and memorization (and a CXR classifier).

The input contract is torchxrayvision's own: one channel, square (center crop), 224 px, intensities mapped
from 0..1 to [-1024, 1024] (``xrv.datasets.normalize``: ``(2 * x / maxval - 1) * 1024``). The reference
scripts fed generated images in 0..255 and real ones in 0..1 at 512 px; here every image, real or generated,
goes through :meth:`XRVFeatureExtractor.preprocess`, the one place that enforces the contract.

Weights: ``densenet121-res224-all`` is downloaded by torchxrayvision into ``~/.torchxrayvision/models_data/``
as a whole pickled ``DenseNet`` (torchxrayvision loads it with ``torch.load(weights_only=False)`` and keeps
its ``state_dict``). :func:`load_xrv_densenet` reads that file, or a plain ``state_dict`` saved anywhere, and
never downloads. Random weights only serve plumbing tests and are labelled :data:`RANDOM_WEIGHTS_LABEL`.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cxr_ldm.utils.hashing import state_dict_sha256

log = logging.getLogger(__name__)

XRV_WEIGHTS = "densenet121-res224-all"
XRV_RESOLUTION = 224
XRV_FEATURES = 1024
RANDOM_WEIGHTS_LABEL = "random (plumbing only)"
# bump when the preprocessing changes: cached features carry it in their key
FEATURE_PROTOCOL = "xrv-features2-center-crop-bilinear-aa-224-pm1024-v1"


class XRVWeightsError(FileNotFoundError):
    """The DenseNet weights file is missing (or random weights were not explicitly allowed)."""


def xrv_weights_url(weights: str = XRV_WEIGHTS) -> str:
    import torchxrayvision as xrv

    if weights not in xrv.models.model_urls:
        names = sorted(k for k in xrv.models.model_urls if k.startswith("densenet"))
        raise ValueError(f"unknown torchxrayvision weights {weights!r}; known DenseNet weights: {names}")
    return xrv.models.model_urls[weights]["weights_url"]


def xrv_cache_file(weights: str = XRV_WEIGHTS) -> Path:
    """Where torchxrayvision keeps ``weights`` after downloading them (``xrv.models.get_weights``)."""
    import torchxrayvision as xrv

    return Path(xrv.utils.get_cache_dir()).expanduser() / os.path.basename(xrv_weights_url(weights))


def read_densenet_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` held by ``path``: torchxrayvision's whole pickled model, or a plain state dict.

    A plain state dict loads with ``weights_only=True``. The file torchxrayvision downloads is a pickled
    module, which only ``weights_only=False`` reads (exactly what torchxrayvision itself does): only load
    such files from a source you trust. ``{"state_dict": ...}`` wrappers and DDP's ``module.`` prefix are
    accepted.
    """
    path = Path(path)
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        log.info(
            "%s is a pickled model (torchxrayvision's download format); loading it as torchxrayvision does",
            path,
        )
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, nn.Module):
        for (
            module
        ) in obj.modules():  # modules pickled by old torch versions lack this (as torchxrayvision patches)
            if not hasattr(module, "_non_persistent_buffers_set"):
                module._non_persistent_buffers_set = set()
        state = obj.state_dict()
    elif isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        state = dict(obj)
    else:
        raise ValueError(
            f"{path} holds a {type(obj).__name__}; expected a torchxrayvision DenseNet or its state_dict"
        )
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state_dict of tensors")
    prefix = "module."
    if all(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _missing_weights_message(weights: str, cache_file: Path) -> str:
    return (
        f"torchxrayvision weights {weights!r} not found: expected {cache_file} (torchxrayvision's cache). "
        f"Download {xrv_weights_url(weights)} and put it there, or pass xrv_weights=/path/to/file (the "
        "downloaded file or a plain DenseNet state_dict). Nothing is downloaded automatically. For plumbing "
        "tests only, allow_random_xrv=true uses random weights (the numbers are then meaningless)."
    )


def load_xrv_densenet(
    weights_file: str | Path | None = None,
    allow_random: bool = False,
    weights: str = XRV_WEIGHTS,
) -> tuple[nn.Module, str]:
    """``(model, label)``: an eval-mode torchxrayvision DenseNet and a description of its weights.

    ``weights_file`` wins; otherwise torchxrayvision's cache file for ``weights`` is used when present;
    otherwise random weights (seeded, so cached features stay valid) if ``allow_random``, else
    :class:`XRVWeightsError` naming the expected file. The label is the file path, or
    :data:`RANDOM_WEIGHTS_LABEL`. Operating-point thresholds come from the file when it holds them, else from
    torchxrayvision's table for ``weights``.
    """
    import torchxrayvision as xrv

    info = xrv.models.model_urls[weights] if weights in xrv.models.model_urls else {}
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise XRVWeightsError(
                f"xrv_weights={str(path)!r} does not exist. "
                + _missing_weights_message(weights, xrv_cache_file(weights))
            )
    else:
        path = xrv_cache_file(weights)
        if not path.is_file():
            if not allow_random:
                raise XRVWeightsError(_missing_weights_message(weights, path))
            log.warning("torchxrayvision DenseNet with RANDOM weights: features are for plumbing tests only")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = xrv.models.DenseNet(weights=None)
            with torch.no_grad():  # random init on [-1024, 1024] inputs gives features ~1e4: keep them O(1)
                model.features.conv0.weight.div_(1024.0)
            return model.eval(), RANDOM_WEIGHTS_LABEL
    state = read_densenet_state_dict(path)
    op_threshs = state.pop("op_threshs", None)
    if "classifier.weight" not in state:
        raise ValueError(
            f"{path}: no 'classifier.weight' in the state_dict; is it a torchxrayvision DenseNet?"
        )
    model = xrv.models.DenseNet(weights=None, num_classes=int(state["classifier.weight"].shape[0]))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} does not match torchxrayvision's DenseNet-121: {err}") from err
    if op_threshs is None and len(info.get("op_threshs", ())) == model.classifier.out_features:
        op_threshs = torch.tensor(info["op_threshs"], dtype=torch.float32)
    model.op_threshs = op_threshs
    if len(info.get("labels", ())) == model.classifier.out_features:
        model.targets = list(info["labels"])
        model.pathologies = model.targets
    return model.eval(), str(path.resolve())


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, shapes, dtypes, values): part of every cached-feature key."""
    return state_dict_sha256(module.state_dict(), separator=":")


class MeasurementNetwork(nn.Module):
    """A network a measure is defined with: always in eval mode (``train()`` keeps it there: batch-norm and
    dropout behaviour are part of the definition), labelled by its weights (``weights_label``: the file or folder
    they came from, or :data:`RANDOM_WEIGHTS_LABEL`), on the device of its parameters."""

    weights_label: str

    @property
    def is_random(self) -> bool:
        return self.weights_label == RANDOM_WEIGHTS_LABEL

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def train(self, mode: bool = True) -> MeasurementNetwork:
        super().train(False)
        return self


class XRVFeatureExtractor(MeasurementNetwork):
    """0..1 one-channel images ``[B, 1, H, W]`` -> 1024-d DenseNet ``features2`` (ReLU, global average pool).

    ``num_features`` lets torchmetrics' FID/KID take this module as ``feature=``. The wrapped network stays
    in eval mode (batch-norm statistics are part of the feature definition).
    """

    num_features = XRV_FEATURES

    def __init__(self, model: nn.Module, weights_label: str, resolution: int = XRV_RESOLUTION) -> None:
        super().__init__()
        self.model = model.eval()
        self.weights_label = weights_label
        self.resolution = resolution
        self._fingerprint: str | None = None

    @classmethod
    def load(cls, weights_file: str | Path | None = None, allow_random: bool = False) -> XRVFeatureExtractor:
        return cls(*load_xrv_densenet(weights_file, allow_random))

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """torchxrayvision's contract: one channel, center crop to square, 224 px, 0..1 -> [-1024, 1024]."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(
                f"expected single-channel images [B, 1, H, W] in 0..1, got shape {tuple(images.shape)}"
            )
        images = images.float()
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(
                f"expected intensities in 0..1, got [{lo:.3g}, {hi:.3g}] (divide 8-bit images by 255)"
            )
        images = images.clamp(0.0, 1.0)
        h, w = images.shape[-2:]
        if h != w:
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            images = images[..., top : top + side, left : left + side]
        if images.shape[-1] != self.resolution:
            images = F.interpolate(
                images,
                size=(self.resolution, self.resolution),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return images * 2048.0 - 1024.0

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images.to(self.device))
        return self.model.features2(x)

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pathology scores ``[B, n]`` in 0..1 (``model.targets``): calibrated by the operating-point
        thresholds when known (0.5 = the threshold), else the sigmoid of the logits."""
        x = self.preprocess(images.to(self.device))
        out = self.model(x)
        if getattr(self.model, "op_threshs", None) is None:
            out = torch.sigmoid(out)
        return out

    @property
    def targets(self) -> list[str]:
        return list(self.model.targets)


def extract_features(
    extractor: nn.Module, batches: Iterable[torch.Tensor], total: int | None = None, desc: str = "features",
    progress: bool = True,
) -> np.ndarray:  # fmt: skip
    """``[N, D]`` float32 features of an iterable of image batches (only one batch in memory at a time)."""
    out: list[np.ndarray] = []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for images in batches:
            out.append(extractor(images).float().cpu().numpy())
            bar.update(len(images))
    if not out:
        return np.zeros((0, getattr(extractor, "num_features", 0)), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)

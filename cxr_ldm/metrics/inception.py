"""Optional standard Inception-v3 FID features (torch-fidelity's network, as torchmetrics' FID uses it).

Only available when ``torch-fidelity`` is installed and its weights file is on disk: either given as
``fid.inception_weights=FILE`` or in torch's hub cache, where torch-fidelity itself downloads it
(``$TORCH_HOME/hub/checkpoints/``). Nothing is downloaded here.

The file is a plain ``dict`` of tensors (torch-fidelity's ``util_convert_inception_weights.py`` output). It
is read once with ``weights_only=True`` before torch-fidelity reads it again with ``weights_only=False``,
so a file holding anything but tensors is refused rather than unpickled. Its sha256 is the cache
fingerprint of the features, and tells whether it is the published file (its name carries the hash prefix).

Input contract, as torchmetrics' ``FrechetInceptionDistance`` fed uint8 images: grayscale
``[B, 1, H, W]`` in 0..1 is rounded to 8 bits (``round(x * 255)``: gives back an 8-bit PNG's exact pixels,
and the nearest level for resized images, where torchmetrics' ``normalize=True`` truncates) and repeated to
three channels, as PIL's ``convert("RGB")`` does; the network resizes to 299 px (bilinear, antialiased:
``NoTrainInceptionV3``'s default; torch-fidelity's own command resizes like TensorFlow 1 instead) and maps
0..255 to [-1, 1].
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

from cxr_ldm.utils.hashing import file_sha256

log = logging.getLogger(__name__)

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the file name carries its sha256 prefix
INCEPTION_RESOLUTION = 299
INCEPTION_FEATURES = 2048
# bump when the preprocessing changes: cached features carry it in their key
INCEPTION_PROTOCOL = "torchmetrics-inception-v3-compat-2048-uint8-round-rgb-repeat-bilinear-aa-299-v1"


class InceptionWeightsError(FileNotFoundError):
    """The Inception weights file is missing or is not torch-fidelity's Inception-v3 state dict."""


def hub_weights_file() -> Path:
    """Where torch-fidelity's download lands: ``torch.hub.get_dir()/checkpoints`` (follows ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def inception_weights_file(weights_file: str | Path | None = None) -> Path:
    """The given file, or torch-fidelity's download location in the torch hub cache; raises when missing."""
    path = Path(weights_file).expanduser() if weights_file else hub_weights_file()
    if not path.is_file():
        raise InceptionWeightsError(
            f"Inception FID weights not found: {path}. Download {INCEPTION_URL} to {hub_weights_file()} "
            "or pass fid.inception_weights=FILE (or set fid.inception=false)."
        )
    return path


def _require_torch_fidelity() -> None:
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ModuleNotFoundError(
            "Inception FID needs torch-fidelity: `pip install 'torch-fidelity>=0.3'` (or fid.inception=false)"
        )


def _check_tensors_only(path: Path) -> None:
    """Refuse anything but a dict of tensors before torch-fidelity unpickles it with ``weights_only=False``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file: the same one-line error
        raise InceptionWeightsError(
            f"{path} is not a torch-fidelity Inception weights file ({type(err).__name__}: {err}); "
            f"expected the state dict downloaded from {INCEPTION_URL}"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InceptionWeightsError(
            f"{path} does not hold a state dict of tensors (expected {INCEPTION_URL})"
        )


class InceptionFeatureExtractor(nn.Module):
    """0..1 single-channel images ``[B, 1, H, W]`` -> 2048-d Inception-v3 pool features (float32)."""

    num_features = INCEPTION_FEATURES

    def __init__(self, weights_file: str | Path | None = None) -> None:
        super().__init__()
        _require_torch_fidelity()
        path = inception_weights_file(weights_file)
        from torchmetrics.image.fid import NoTrainInceptionV3

        _check_tensors_only(path)
        try:
            self.net = NoTrainInceptionV3(
                "inception-v3-compat", [str(INCEPTION_FEATURES)], feature_extractor_weights_path=str(path)
            )
        except RuntimeError as err:  # load_state_dict: missing / unexpected keys or wrong shapes
            raise InceptionWeightsError(
                f"{path} is not torch-fidelity's Inception-v3 state dict (see {INCEPTION_URL}): "
                f"{str(err)[:300]}"
            ) from err
        self.weights_label = str(path.resolve())
        self.sha256 = file_sha256(path)
        self.is_published = self.sha256.startswith(INCEPTION_SHA256_PREFIX)
        if not self.is_published:
            log.warning(
                "%s is not torch-fidelity's published Inception file (sha256 %s..., expected %s...): "
                "its FID is not comparable with published Inception FIDs",
                path, self.sha256[:12], INCEPTION_SHA256_PREFIX,
            )  # fmt: skip

    @property
    def fingerprint(self) -> str:
        """Part of every cached-feature key: the weights file's content, not its path."""
        return f"sha256:{self.sha256}"

    @staticmethod
    def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` in 0..1 -> ``[B, 3, H, W]`` uint8: what torch-fidelity reads from an 8-bit PNG."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected single-channel images [B, 1, H, W], got {tuple(images.shape)}")
        return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.net.parameters()).device
        return self.net(self.to_uint8_rgb(images).to(device)).float()

"""Optional standard Inception-v3 FID features (torch-fidelity's network, as torchmetrics uses it).

Only available when ``torch-fidelity`` is installed and its weights file is on disk: either given as
``fid.inception_weights=FILE`` or in torch's hub cache, where torch-fidelity itself downloads it. Nothing is
downloaded here. Grayscale images are repeated to three channels and quantised to 8 bits, as torchmetrics
feeds images to this network.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_PROTOCOL = "torch-fidelity-inception-v3-2048-uint8-rgb-repeat-v1"


def inception_weights_file(weights_file: str | Path | None = None) -> Path:
    """The given file, or torch-fidelity's download location in the torch hub cache; raises when missing."""
    path = (
        Path(weights_file).expanduser()
        if weights_file
        else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception FID weights not found: {path}. Download {INCEPTION_URL} to "
            f"{Path(torch.hub.get_dir()) / 'checkpoints' / INCEPTION_FILE} "
            "or pass fid.inception_weights=FILE."
        )
    return path


class InceptionFeatureExtractor(nn.Module):
    """0..1 single-channel images ``[B, 1, H, W]`` -> 2048-d Inception-v3 pool features."""

    num_features = 2048

    def __init__(self, weights_file: str | Path | None = None) -> None:
        super().__init__()
        path = inception_weights_file(weights_file)
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.net = NoTrainInceptionV3(
                "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
            )
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(
                "Inception FID needs torch-fidelity: `pip install torch-fidelity` (or fid.inception=false)"
            ) from err
        self.weights_label = str(path.resolve())

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected single-channel images [B, 1, H, W], got {tuple(images.shape)}")
        device = next(self.net.parameters()).device
        pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
        return self.net(pixels.to(device)).float()

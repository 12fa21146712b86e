"""Tensor images in 0..1 to 8-bit pixels, grids and PNG files: one definition for callbacks and commands."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Clip to 0..1 and round to 0..255."""
    return (images.detach().float().cpu().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()


def image_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: float = 0.0) -> np.ndarray:
    """8-bit grayscale grid ``[H, W]`` of ``[N, C, h, w]`` images in 0..1 (first channel), ``nrow`` per row."""
    if images.ndim != 4:
        raise ValueError(f"expected [N, C, H, W] images, got shape {tuple(images.shape)}")
    grid = make_grid(images[:, :1].detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=pad_value)
    return to_uint8(grid[0])


def save_png(pixels: np.ndarray | torch.Tensor, path: str | Path | IO[bytes]) -> Path | IO[bytes]:
    """Write an 8-bit grayscale PNG (a tensor is taken as 0..1) to a path, creating the folder, or to an open
    binary file (e.g. :func:`cxr_ldm.utils.atomic.atomic_write`'s)."""
    array = to_uint8(pixels.squeeze()) if isinstance(pixels, torch.Tensor) else pixels
    if not isinstance(path, str | Path):
        Image.fromarray(array).save(path, format="PNG")
        return path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path

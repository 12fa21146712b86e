"""MS-SSIM settings valid for an image size: one definition for stage-1 validation and the evaluation.

A models/ module (not the LightningModule's file) so that ``models/autoencoder.py`` and
``metrics/msssim.py`` share it without the metrics layer importing the training module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Wang et al. 2003 scale weights, as torchmetrics' default.
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@dataclass(frozen=True)
class MSSSIMSettings:
    """Arguments of torchmetrics' MS-SSIM that are valid for one image size."""

    kernel_size: int
    sigma: float
    betas: tuple[float, ...]

    def as_kwargs(self) -> dict[str, Any]:
        return {"kernel_size": self.kernel_size, "sigma": self.sigma, "betas": self.betas}


def _ms_ssim_valid(size: int, kernel_size: int, scales: int) -> bool:
    # the first two are torchmetrics' input checks; the third keeps at least one pixel of the SSIM map at the
    # coarsest scale after torchmetrics crops the kernel's border
    coarsest = size // 2 ** (scales - 1)
    return (
        size >= 2**scales and size // max(1, scales - 1) ** 2 > kernel_size - 1 and coarsest > kernel_size - 1
    )


def ms_ssim_settings(height: int, width: int | None = None, min_kernel_size: int = 7) -> MSSSIMSettings:
    """Kernel size, Gaussian sigma and scale weights for which MS-SSIM is defined on ``height x width``.

    The standard setting (Gaussian kernel 11, sigma 1.5, 5 scales) needs at least 176 px. Smaller images keep
    as many scales as possible with a kernel of at least ``min_kernel_size``, then fall back to smaller
    kernels. Fewer scales use the first standard weights renormalised to sum 1 (5 scales: exactly
    torchmetrics' defaults); sigma shrinks with the kernel (1.5 * k / 11), which gives exactly a ``k``-wide
    kernel in torchmetrics (it derives the Gaussian width from sigma, not from ``kernel_size``).
    """
    size = min(height, width if width is not None else height)
    candidates = [(k, s) for s in range(len(MS_SSIM_BETAS), 0, -1) for k in range(11, 2, -2)]
    valid = [(k, s) for k, s in candidates if _ms_ssim_valid(size, k, s)]
    preferred = [(k, s) for k, s in valid if k >= min_kernel_size] or valid
    if not preferred:
        raise ValueError(
            f"MS-SSIM is not defined for images of {height}x{width or height} px (need at least 4 px)"
        )
    kernel_size, scales = preferred[0]
    betas = MS_SSIM_BETAS
    if scales < len(MS_SSIM_BETAS):
        betas = tuple(b / sum(MS_SSIM_BETAS[:scales]) for b in MS_SSIM_BETAS[:scales])
    sigma = 1.5 * kernel_size / 11
    assert int(3.5 * sigma + 0.5) * 2 + 1 == kernel_size  # torchmetrics' Gaussian width for this sigma
    return MSSSIMSettings(kernel_size, sigma, betas)

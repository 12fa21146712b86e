"""MS-SSIM and PSNR per image, and the mean pairwise MS-SSIM of a set (sample diversity).

MS-SSIM uses the size-dependent settings of ``cxr_ldm.models.ms_ssim.ms_ssim_settings`` (the standard
kernel 11 / 5 scales from 176 px up, fewer scales and smaller kernels below), the same as stage-1 validation,
so evaluation and training report the same quantity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from tqdm.auto import tqdm

from cxr_ldm.models.ms_ssim import ms_ssim_settings


def as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or float (0..1) images as float32 in 0..1."""
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float().clamp(0.0, 1.0)


def ms_ssim_per_image(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[N]`` MS-SSIM of each pair ``preds[i]`` / ``target[i]`` (``[N, 1, H, W]``, data range 1)."""
    if preds.shape != target.shape or preds.ndim != 4:
        raise ValueError(
            f"expected two [N, C, H, W] batches of one shape, got {tuple(preds.shape)} and "
            f"{tuple(target.shape)}"
        )
    settings = ms_ssim_settings(*preds.shape[-2:])
    with torch.autocast(device_type=preds.device.type, enabled=False):
        values = multiscale_structural_similarity_index_measure(
            as_unit_float(preds),
            as_unit_float(target),
            data_range=1.0,
            reduction="none",
            **settings.as_kwargs(),
        )
    return values.reshape(-1)


def psnr_per_image(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[N]`` PSNR in dB for data range 1 (per image, as stage-1 validation averages it)."""
    mse = (as_unit_float(preds) - as_unit_float(target)).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


@dataclass(frozen=True)
class PairwiseMSSSIM:
    mean: float
    std: float
    n_images: int
    n_pairs: int
    all_pairs: bool


def pair_indices(n: int, max_pairs: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair ``i < j`` of ``n`` items, or ``max_pairs`` of them drawn without replacement."""
    if n < 2:
        raise ValueError(f"need at least 2 images for pairwise MS-SSIM, got {n}")
    i, j = np.triu_indices(n, k=1)
    if max_pairs is not None and max_pairs < len(i):
        keep = np.sort(np.random.default_rng(seed).choice(len(i), size=int(max_pairs), replace=False))
        i, j = i[keep], j[keep]
    return i, j


def pairwise_ms_ssim(
    images: torch.Tensor,
    max_pairs: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "pairwise MS-SSIM",
) -> PairwiseMSSSIM:
    """Mean MS-SSIM over pairs of distinct images (MS-SSIM is symmetric, so unordered pairs suffice).

    ``images`` ``[N, 1, H, W]`` (uint8 keeps a large set small in memory); pairs are evaluated
    ``batch_size`` at a time on ``device``. The reference averaged over all ordered pairs of 1,000 samples,
    which is the same mean as over all unordered pairs.
    """
    i, j = pair_indices(len(images), max_pairs, seed)
    values = []
    with tqdm(total=len(i), desc=desc, unit="pair", disable=not progress) as bar:
        for start in range(0, len(i), batch_size):
            a = images[torch.as_tensor(i[start : start + batch_size])].to(device)
            b = images[torch.as_tensor(j[start : start + batch_size])].to(device)
            values.append(ms_ssim_per_image(a, b).double().cpu())
            bar.update(len(a))
    v = torch.cat(values)
    return PairwiseMSSSIM(
        float(v.mean()), float(v.std()) if len(v) > 1 else 0.0, len(images), len(v),
        all_pairs=len(v) == len(images) * (len(images) - 1) // 2,
    )  # fmt: skip

"""MS-SSIM and PSNR per image and the pairwise MS-SSIM of a set (diversity)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from cxr_ldm.metrics.msssim import ms_ssim_per_image, pair_indices, pairwise_ms_ssim, psnr_per_image
from cxr_ldm.models.ms_ssim import ms_ssim_settings


def blobs(n: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    axis = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    out = []
    for _ in range(n):
        cx, cy = (torch.rand(2, generator=gen) - 0.5).tolist()
        r = 0.2 + 0.4 * torch.rand((), generator=gen).item()
        img = 0.2 + 0.6 * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)
        out.append((img + 0.05 * torch.rand(size, size, generator=gen)).clamp(0, 1))
    return torch.stack(out)[:, None]


@pytest.mark.parametrize("size", [32, 64, 200])
def test_ms_ssim_of_identical_images_is_one(size: int):
    images = blobs(3, size)
    np.testing.assert_allclose(ms_ssim_per_image(images, images.clone()).numpy(), 1.0, atol=1e-5)
    other = blobs(3, size, seed=1)
    assert (ms_ssim_per_image(images, other) < 0.99).all()


def test_ms_ssim_uses_the_size_dependent_settings_of_stage_one():
    a, b = blobs(4, 48), blobs(4, 48, seed=2)
    expected = multiscale_structural_similarity_index_measure(
        a, b, data_range=1.0, reduction="none", **ms_ssim_settings(48).as_kwargs()
    )
    torch.testing.assert_close(ms_ssim_per_image(a, b), expected)


def test_psnr_of_a_constant_offset():
    images = torch.full((2, 1, 16, 16), 0.5)
    np.testing.assert_allclose(
        psnr_per_image(images + 0.1, images).numpy(), 20.0, rtol=1e-5
    )  # 10 log10(1 / 0.01)
    uint8 = (images * 255).round().to(torch.uint8)
    assert psnr_per_image(uint8, uint8)[0] == pytest.approx(100.0)  # MSE 0 clamped at 1e-10


def test_pairwise_mean_equals_the_loop_over_all_pairs():
    images = blobs(5, 32)
    result = pairwise_ms_ssim(images, batch_size=3, progress=False)
    loop = [
        float(ms_ssim_per_image(images[i : i + 1], images[j : j + 1]))
        for i, j in itertools.combinations(range(5), 2)
    ]
    assert (result.n_images, result.n_pairs, result.all_pairs) == (5, 10, True)
    assert result.mean == pytest.approx(np.mean(loop), abs=1e-6)
    assert result.std == pytest.approx(np.std(loop, ddof=1), abs=1e-6)
    # 8-bit images give the value of their float version
    as_uint8 = (images * 255).round().to(torch.uint8)
    assert pairwise_ms_ssim(as_uint8, progress=False).mean == pytest.approx(
        pairwise_ms_ssim(as_uint8.float() / 255, progress=False).mean, abs=1e-6
    )


def test_copies_have_pairwise_ms_ssim_one_and_pairs_can_be_subsampled():
    copies = blobs(1, 32).repeat(4, 1, 1, 1)
    assert pairwise_ms_ssim(copies, progress=False).mean == pytest.approx(1.0, abs=1e-5)
    i, j = pair_indices(10, max_pairs=7, seed=1)
    assert len(i) == 7 and (i < j).all() and len(set(zip(i.tolist(), j.tolist(), strict=True))) == 7
    sub = pairwise_ms_ssim(blobs(10, 32), max_pairs=7, seed=1, progress=False)
    assert (sub.n_pairs, sub.all_pairs) == (7, False)
    with pytest.raises(ValueError, match="at least 2"):
        pair_indices(1)

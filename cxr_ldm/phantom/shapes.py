"""Vectorised drawing primitives: profiles, ramps, band-limited noise, curves and distances (numpy, float32)."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["bezier_points", "cylinder_profile", "distance_in_pixels", "smooth_noise", "smoothstep"]


def cylinder_profile(offset: np.ndarray) -> np.ndarray:
    """Thickness profile of a cylinder seen side-on, for the offset from its axis over its radius."""
    return np.sqrt(np.clip(1.0 - offset * offset, 0.0, 1.0))


def smoothstep(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 below ``low``, 1 above ``high``, a smooth cubic ramp between."""
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Band-limited noise (unit-ish std): ``cells`` random values across the width, bicubic upsampled."""
    height, width = shape
    cells_down = max(2, round(cells * height / width))
    coarse = rng.standard_normal((cells_down + 2, cells + 2)).astype(np.float32)
    upsampled = Image.fromarray(coarse, mode="F").resize(
        (width + 2 * width // cells, height + 2 * height // cells_down), Image.BICUBIC
    )
    noise = np.asarray(upsampled, dtype=np.float32)
    margin = width // cells // 2
    return noise[margin : margin + height, margin : margin + width].copy()


def bezier_points(*control_points: tuple[float, float], n: int = 24) -> np.ndarray:
    """``n`` points along the Bezier curve with these control points (de Casteljau, any degree)."""
    t = np.linspace(0.0, 1.0, n)[:, None, None]
    points = np.broadcast_to(np.asarray(control_points, dtype=np.float64), (n, len(control_points), 2))
    while points.shape[1] > 1:
        points = points[:, :-1] * (1.0 - t) + points[:, 1:] * t
    return points[:, 0]


def distance_in_pixels(implicit: np.ndarray) -> np.ndarray:
    """Turn an implicit function (negative inside) into an approximate signed distance in pixels."""
    grad_y, grad_x = np.gradient(implicit)
    return implicit / np.maximum(np.sqrt(grad_x * grad_x + grad_y * grad_y), np.float32(1e-6))

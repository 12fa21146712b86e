"""From attenuation to an 8-bit radiograph: film response, exposure variation and quantum noise."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from cxr_ldm.phantom.shapes import smooth_noise

__all__ = ["expose"]


def expose(
    attenuation: np.ndarray, knobs: np.ndarray, rng: np.random.Generator, width: int, height: int
) -> np.ndarray:
    """Film response, exposure variation, low-frequency non-uniformity and quantum noise -> uint8.

    ``knobs``: four uniform draws in [0, 1) for contrast (gamma), level, fog and noise strength.
    """
    gamma = 1.2 + 0.4 * (knobs[0] - 0.5)
    level = 0.97 + 0.1 * (knobs[1] - 0.5)
    blurred = np.maximum(gaussian_filter(attenuation, 0.35 + width / 600.0, truncate=2.5) / level, 0.0)
    image = (blurred / (1.0 + blurred**6) ** (1.0 / 6.0)) ** gamma  # soft shoulder instead of hard clipping
    image = 0.02 + 0.03 * knobs[2] + 0.95 * image
    heel_effect = smooth_noise(rng, (height, width), 3)
    image = image * (1.0 + 0.035 * heel_effect)
    # per-pixel noise grows with resolution (a downscaled radiograph is smoother)
    sigma = (0.008 + 0.014 * knobs[3]) * np.sqrt(min(width, 1024) / 256.0)
    image = image + sigma * rng.standard_normal((height, width), dtype=np.float32)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)

"""The lungs of the frontal view: outline, diaphragm, the air they hold and their vascular markings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr_ldm.phantom.anatomy import Anatomy
from cxr_ldm.phantom.geometry import PixelFrame
from cxr_ldm.phantom.shapes import distance_in_pixels, smooth_noise, smoothstep

__all__ = [
    "LungOutline",
    "diaphragm_height",
    "hemithorax_implicit",
    "lung_field",
    "lung_markings",
    "lung_outline",
]


@dataclass(frozen=True)
class LungOutline:
    """Where the two lungs reach in one image (anatomy coordinates)."""

    apex: float  # v of the apices
    apex_u: float  # |u| of the apices
    lateral_u: float  # |u| of the widest lung
    base_right: float  # v of the costophrenic angles
    base_left: float
    dome_right: float  # v of the hemidiaphragm domes
    dome_left: float

    def base(self, right: bool | np.ndarray) -> float | np.ndarray:
        return np.where(right, np.float32(self.base_right), np.float32(self.base_left))


def lung_outline(anatomy: Anatomy, inspiration: float, ap: bool) -> LungOutline:
    """The patient's lungs at this breath (``inspiration`` shifts the bases); AP: higher apices."""
    base_right = anatomy.base + inspiration
    return LungOutline(
        apex=anatomy.apex + (0.015 if ap else 0.0),
        apex_u=anatomy.lung_center - 0.05,
        lateral_u=anatomy.lung_center + anatomy.lung_half,
        base_right=base_right,
        base_left=base_right + anatomy.left_drop * 0.6,
        dome_right=base_right - anatomy.dome,
        dome_left=base_right - anatomy.dome + anatomy.left_drop,
    )


def diaphragm_height(abs_u: np.ndarray, patient_right: np.ndarray, lungs: LungOutline) -> np.ndarray:
    """v of the hemidiaphragms: domes peaking at |u| = 0.16, falling steeply into the costophrenic angles."""
    base = lungs.base(patient_right)
    dome = np.where(patient_right, np.float32(lungs.dome_right), np.float32(lungs.dome_left))
    dome_u = 0.16
    outward = np.clip((abs_u - dome_u) / (lungs.lateral_u * 1.03 - dome_u), 0.0, 1.2)
    inward = np.clip((dome_u - abs_u) / dome_u, 0.0, 1.0)
    return dome + (base - dome) * np.where(abs_u > dome_u, outward**2.4, 0.3 * inward**2)


def hemithorax_implicit(
    abs_u: np.ndarray, v: np.ndarray, patient_right: np.ndarray, lungs: LungOutline
) -> np.ndarray:
    """One hemithorax (negative inside), mirrored by ``|u|``: rounded apex, lateral wall, domed diaphragm."""
    base = lungs.base(patient_right)
    height_fraction = (v - lungs.apex) / (base - lungs.apex)
    wall_fraction = np.clip(height_fraction / 0.9, 0.0, 1.0)
    lateral_wall = lungs.apex_u + (lungs.lateral_u - lungs.apex_u) * (
        1.0 - (1.0 - wall_fraction) ** 2.5
    ) ** 0.55 * (0.95 + 0.08 * np.clip(height_fraction, 0, 1))
    medial_fraction = np.clip(height_fraction / 0.22, 0.0, 1.0)
    medial_wall = lungs.apex_u - (lungs.apex_u - 0.035) * np.sqrt(1.0 - (1.0 - medial_fraction) ** 2)
    return np.maximum(
        np.maximum(abs_u - lateral_wall, medial_wall - abs_u),
        np.maximum(v - diaphragm_height(abs_u, patient_right, lungs), lungs.apex - v),
    )


def lung_field(frame: PixelFrame, lungs: LungOutline) -> tuple[np.ndarray, np.ndarray]:
    """The lung mask (0..1, antialiased) and the signed distance to the lung edge in pixels (negative inside)."""
    distance = distance_in_pixels(hemithorax_implicit(frame.abs_u, frame.v, frame.patient_right, lungs))
    mask = np.clip(0.5 - distance / 1.8, 0.0, 1.0)
    return mask, distance


def lung_markings(frame: PixelFrame, lungs: LungOutline, rng: np.random.Generator) -> np.ndarray:
    """Lung tissue density: vessels radiating from the hila, broken up and fading to the periphery; fine mottle."""
    shape = (frame.height, frame.width)
    warp = smooth_noise(rng, shape, 12)
    breaks = smooth_noise(rng, shape, 24)
    mottle = smooth_noise(rng, shape, 48)
    hilum_v = np.where(frame.patient_right, np.float32(lungs.apex + 0.3), np.float32(lungs.apex + 0.285))
    du, dv = frame.abs_u - 0.095, frame.v - hilum_v
    radius = np.sqrt(du * du + dv * dv)
    angle = np.arctan2(dv, du) + 0.3 * warp + np.where(frame.patient_right, np.float32(0.0), np.float32(0.37))
    main_vessels = np.maximum(np.cos(17.0 * angle), 0.0) ** 6
    branches = np.maximum(np.cos(31.0 * angle + 1.3), 0.0) ** 8 * smoothstep(radius, 0.05, 0.13)
    vessels = (main_vessels + 0.7 * branches) * np.exp(-radius / 0.14) * np.clip(0.6 + 0.8 * breaks, 0.0, 1.0)
    hilum = np.exp(-((du / 0.035) ** 2 + (dv / 0.065) ** 2))
    height_fraction = (frame.v - lungs.apex) / (lungs.base_right - lungs.apex)
    apical_cap = np.exp(-((height_fraction / 0.12) ** 2))
    return 0.05 + 0.16 * vessels + 0.02 * mottle + 0.15 * hilum + 0.07 * apical_cap

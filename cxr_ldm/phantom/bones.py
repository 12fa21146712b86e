"""Bone of the frontal view: posterior and anterior ribs, clavicles, spine and humeral heads."""

from __future__ import annotations

import numpy as np

from cxr_ldm.phantom.anatomy import Anatomy
from cxr_ldm.phantom.geometry import PixelFrame
from cxr_ldm.phantom.lungs import LungOutline
from cxr_ldm.phantom.shapes import cylinder_profile, smoothstep

__all__ = ["bones"]


def _posterior_ribs(frame: PixelFrame, lungs: LungOutline, anatomy: Anatomy, lung: np.ndarray) -> np.ndarray:
    """Arches whose spacing widens downwards, the cortical shell brighter than the marrow, fading below the domes."""
    abs_u, v = frame.abs_u, frame.v
    arch = np.where(abs_u < 0.12, 3.0 * (abs_u - 0.12) ** 2, 2.1 * (abs_u - 0.12) ** 2)
    spacing, spacing_growth = anatomy.rib_spacing, 0.004
    depth = np.maximum(v - arch - (lungs.apex - 0.045) + anatomy.rib_offset * spacing * 0.3, 0.0)
    rib_index = (np.sqrt(spacing * spacing + 2 * spacing_growth * depth) - spacing) / spacing_growth
    phase = rib_index - np.floor(rib_index)
    offset = (phase - 0.23) / 0.23
    rib = cylinder_profile(offset) - 0.6 * cylinder_profile(
        offset / 0.7
    )  # cortical shell brighter than the marrow
    lateral = lungs.lateral_u * 1.04
    reach = smoothstep(abs_u, 0.025, 0.06) * (1.0 - smoothstep(abs_u, lateral + 0.01, lateral + 0.06))
    return (
        rib * reach * (0.35 + 0.65 * lung) * (rib_index < 10.6)
        * (1.0 - smoothstep(v, lungs.dome_right, lungs.base_right + 0.08))
    )  # fmt: skip


def _anterior_ribs(frame: PixelFrame, lungs: LungOutline, anatomy: Anatomy) -> np.ndarray:
    abs_u, v = frame.abs_u, frame.v
    lateral = lungs.lateral_u * 1.04
    slope = v + 0.45 * abs_u - 0.4 * (abs_u - 0.25) ** 2 - lungs.apex + 0.02
    rib_index = slope / (anatomy.rib_spacing * 1.3) + 0.5
    phase = rib_index - np.floor(rib_index)
    anterior = (
        cylinder_profile((phase - 0.2) / 0.2)
        * smoothstep(abs_u, 0.1, 0.2)
        * (1.0 - smoothstep(abs_u, lateral - 0.02, lateral + 0.03))
    )
    anterior *= (rib_index > 1.0) * (rib_index < 6.5)
    return anterior


def _clavicles(frame: PixelFrame, lungs: LungOutline, ap: bool) -> np.ndarray:
    """Clavicles, flatter and higher on an AP film."""
    abs_u, v = frame.abs_u, frame.v
    medial_v = lungs.apex + 0.05 - (0.025 if ap else 0.0)
    axis_v = medial_v - (0.08 if ap else 0.17) * (abs_u - 0.05) + 0.016 * np.sin(np.pi * (abs_u - 0.05) / 0.3)
    return (
        cylinder_profile((v - axis_v) / 0.019)
        * smoothstep(abs_u, 0.035, 0.06)
        * (1.0 - smoothstep(abs_u, 0.32, 0.37))
    )


def _spine(frame: PixelFrame) -> np.ndarray:
    """The vertebral column, widening downwards, with darker disc spaces."""
    v = frame.v
    spine = cylinder_profile(frame.u / (0.03 + 0.018 * np.clip(v, 0.0, 1.2)))
    period = 0.045 + 0.012 * np.clip(v, 0.0, 1.2)
    spine *= 1.0 - 0.5 * smoothstep(np.abs((v / period) % 1.0 - 0.5), 0.36, 0.46)
    return spine


def _humeral_heads(frame: PixelFrame, anatomy: Anatomy) -> np.ndarray:
    distance = np.sqrt(
        (frame.abs_u - (anatomy.body_half + 0.005)) ** 2 + (frame.v - anatomy.shoulder - 0.02) ** 2
    )
    return cylinder_profile(distance / 0.065)


def bones(frame: PixelFrame, lungs: LungOutline, anatomy: Anatomy, lung: np.ndarray, ap: bool) -> np.ndarray:
    """Bone density of the frontal view: posterior ribs (arches), faint anterior ribs, clavicles, spine and
    humeral heads."""
    posterior = _posterior_ribs(frame, lungs, anatomy, lung)
    anterior = _anterior_ribs(frame, lungs, anatomy)
    clavicles = _clavicles(frame, lungs, ap)
    spine = _spine(frame)
    humeral_heads = _humeral_heads(frame, anatomy)
    return 0.11 * posterior + 0.05 * anterior + 0.26 * clavicles + 0.07 * spine + 0.22 * humeral_heads

"""Soft tissue and air outside the lungs in the frontal view: body, airways, gastric bubble, breast shadows."""

from __future__ import annotations

import numpy as np

from cxr_ldm.phantom.anatomy import Anatomy
from cxr_ldm.phantom.geometry import PixelFrame
from cxr_ldm.phantom.lungs import LungOutline
from cxr_ldm.phantom.shapes import cylinder_profile, smoothstep

__all__ = ["airways", "body_thickness", "breast_shadows", "carina_height", "gastric_bubble"]


def carina_height(lungs: LungOutline) -> float:
    """v of the carina, where the trachea divides (tubes and lines are placed against it)."""
    return lungs.apex + 0.23


def body_thickness(frame: PixelFrame, anatomy: Anatomy) -> np.ndarray:
    """Flat-topped elliptic thickness, narrowing to the neck, shoulders at the top corners, a slight waist."""
    half_body = (
        anatomy.neck_half
        + (anatomy.body_half - anatomy.neck_half) * smoothstep(frame.v, -0.02, anatomy.shoulder + 0.05) ** 0.7
    )
    half_body *= 1.0 - 0.06 * np.clip((frame.v - 0.55) / 0.6, 0.0, 1.0) ** 2  # waist
    body = np.sqrt(np.clip(1.0 - (frame.abs_u / half_body) ** 6, 0.0, 1.0))
    body *= np.clip(0.5 - (frame.abs_u - half_body) * (frame.width / 1.5), 0.0, 1.0)
    return body


def airways(frame: PixelFrame, lungs: LungOutline) -> np.ndarray:
    """Air in the trachea and the main bronchi (the right one steeper and shorter)."""
    u, v = frame.u, frame.v
    carina = carina_height(lungs)
    air = cylinder_profile(u / 0.019) * (1.0 - smoothstep(v, carina - 0.01, carina + 0.01))
    for sign, angle in ((-1.0, 0.62), (1.0, 0.8)):
        along = np.clip((u * sign * np.cos(angle) + (v - carina) * np.sin(angle)) / 0.08, 0.0, 1.0)
        axis_u, axis_v = sign * along * 0.08 * np.cos(angle), carina + along * 0.08 * np.sin(angle)
        distance = np.sqrt((u - axis_u) ** 2 + (v - axis_v) ** 2)
        air = np.maximum(air, cylinder_profile(distance / 0.013) * (along < 0.98))
    return air


def gastric_bubble(frame: PixelFrame, lungs: LungOutline) -> np.ndarray:
    """Air in the stomach under the left dome, above a flat fluid level."""
    u, v = frame.u, frame.v
    bubble_v = lungs.dome_left + 0.065
    bubble = np.clip(
        0.5 - (np.sqrt(((u - 0.16) / 0.06) ** 2 + ((v - bubble_v) / 0.035) ** 2) - 1.0) * 8, 0.0, 1.0
    )
    bubble *= 1.0 - smoothstep(v, bubble_v + 0.005, bubble_v + 0.015)  # air above a flat fluid level
    return bubble


def breast_shadows(frame: PixelFrame, lungs: LungOutline, anatomy: Anatomy) -> np.ndarray:
    """Soft-tissue density over both lung bases (zero for a male patient)."""
    if not anatomy.female:
        return np.zeros_like(frame.u)
    v = frame.v
    distance = np.sqrt(((frame.abs_u - 0.28) / 0.17) ** 2 + ((v - (lungs.base_right - 0.1)) / 0.13) ** 2)
    return np.clip(0.5 - (distance - 1.0) * 6, 0.0, 1.0) * smoothstep(
        v, lungs.base_right - 0.25, lungs.base_right - 0.1
    )

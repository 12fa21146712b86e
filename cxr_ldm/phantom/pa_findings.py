"""The findings as they change the frontal view: pleural fluid, consolidation, nodule or mass, pneumothorax.

Fluid and opacity replace lung air with water density; a pneumothorax adds air without lung markings and
draws the visceral pleural line.
"""

from __future__ import annotations

import numpy as np

from cxr_ldm.phantom.geometry import PixelFrame
from cxr_ldm.phantom.heart import HeartPlacement
from cxr_ldm.phantom.lungs import LungOutline, hemithorax_implicit
from cxr_ldm.phantom.shapes import cylinder_profile, distance_in_pixels, smooth_noise, smoothstep

__all__ = ["consolidation_opacity", "nodule_opacity", "pleural_effusion", "pneumothorax"]

_SIDES = ((True, "right"), (False, "left"))  # (patient's right?, column suffix)
EFFUSION_HEIGHT = (0.0, 0.13, 0.30, 0.50)  # fluid level, fraction of the lung height from the base
_COLLAPSED_SCALE = (1.0, 0.88, 0.78, 0.64)  # pneumothorax: collapsed lung size relative to the hemithorax
_NODULE_RADIUS = (0.0, 0.022, 0.036, 0.065)
_CONSOLIDATION_RADIUS = (0.0, 0.075, 0.1, 0.135)


def _zone_heights(lungs: LungOutline) -> tuple[float, float, float]:
    """v of the upper, middle and lower lung zones."""
    return (lungs.apex + 0.12, lungs.apex + 0.4, lungs.dome_right - 0.06)


def pleural_effusion(frame: PixelFrame, lungs: LungOutline, findings: dict[str, int]) -> np.ndarray:
    """Pleural fluid (0..1) layering from each base, with a meniscus climbing the lateral chest wall."""
    fluid = np.zeros((frame.height, frame.width), np.float32)
    for right, side in _SIDES:
        severity = min(findings[f"pleural_effusion_{side}"], 3)
        if not severity:
            continue
        base = lungs.base_right if right else lungs.base_left
        level = base - EFFUSION_HEIGHT[severity] * (base - lungs.apex)
        lateral_reach = np.clip((frame.abs_u - 0.05) / (lungs.lateral_u - 0.05), 0.0, 1.0)
        top = (
            level - (0.05 + 0.025 * severity) * lateral_reach**2.5
        )  # meniscus: higher along the lateral wall
        layer = smoothstep(frame.v, top - 0.005, top + 0.03 + 0.01 * severity)
        fluid = np.maximum(fluid, layer * frame.side(right))
    return fluid


def consolidation_opacity(
    frame: PixelFrame,
    lungs: LungOutline,
    findings: dict[str, int],
    rng: np.random.Generator,
    heart: HeartPlacement,
) -> np.ndarray:
    """Patchy airspace opacity (0..1) in the lobe each side's ``consolidation_<side>_zone`` names."""
    opacity = np.zeros((frame.height, frame.width), np.float32)
    zone_v = _zone_heights(lungs)
    patchiness = smooth_noise(rng, (frame.height, frame.width), 16)
    for right, side in _SIDES:
        key = f"consolidation_{side}"
        severity, zone = min(findings[key], 3), findings[f"{key}_zone"]
        if not severity:
            continue
        radius = _CONSOLIDATION_RADIUS[severity]
        if zone == 1:  # right middle lobe / lingula: against the heart border
            center_u = max(0.14, heart.half_width * (1.3 if not right else 0.7)) + 0.01
        else:
            center_u = lungs.lateral_u - (0.09 if zone == 0 else 0.065) - 0.4 * radius
            if not right and zone == 2:
                center_u = min(
                    max(center_u, heart.center_u + heart.half_width + 0.2 * radius), lungs.lateral_u - 0.04
                )
        center_v = zone_v[zone] + (0.06 if zone == 1 else 0.0) + (0.05 if zone == 0 else 0.0)
        center_u = -center_u if right else center_u
        blob = np.exp(
            -((((frame.u - center_u) / (radius * 1.15)) ** 2 + ((frame.v - center_v) / radius) ** 2) ** 1.5)
        )
        density = np.clip(0.75 + 0.45 * patchiness, 0.2, 1.0) * blob * (0.78 + 0.07 * severity)
        opacity = np.maximum(opacity, density * frame.side(right))
    return opacity


def nodule_opacity(
    frame: PixelFrame,
    lungs: LungOutline,
    findings: dict[str, int],
    rng: np.random.Generator,
    heart: HeartPlacement,
) -> np.ndarray | None:
    """A round nodule, or a lobulated mass at severity 3 (0..0.95); None without one. Draws from ``rng``
    either way, so the other layers do not depend on whether there is a nodule."""
    severity = min(findings["nodule"], 3)
    lateral_fraction, jitter_v = rng.uniform(0.35, 0.75), rng.uniform(-0.03, 0.03)
    lobe_phases = rng.uniform(0, 2 * np.pi, 2)
    if not severity:
        return None
    radius = _NODULE_RADIUS[severity]
    side, zone = findings["nodule_side"], findings["nodule_zone"]
    center_u = 0.06 + lateral_fraction * (lungs.lateral_u - 0.06 - radius)
    if side == 1 and zone == 2:  # stay lateral of the heart
        center_u = max(
            center_u, min(heart.center_u + heart.half_width + radius, lungs.lateral_u - 1.5 * radius)
        )
    center_u = -center_u if side == 0 else center_u
    du, dv = frame.u - center_u, frame.v - (_zone_heights(lungs)[zone] + jitter_v)
    outline = radius
    if severity == 3:  # a mass: lobulated outline
        angle = np.arctan2(dv, du)
        outline = radius * (
            1.0 + 0.12 * np.cos(3 * angle + lobe_phases[0]) + 0.07 * np.cos(5 * angle + lobe_phases[1])
        )
    nodule = cylinder_profile(np.sqrt(du * du + dv * dv) / outline) ** 0.4
    return 0.95 * nodule


def pneumothorax(
    frame: PixelFrame,
    lungs: LungOutline,
    findings: dict[str, int],
    lung: np.ndarray,
    lung_distance: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The pleural air space (0..1) and the visceral pleural line: the lung shrinks towards its base and hilum."""
    space = np.zeros((frame.height, frame.width), np.float32)
    line = np.zeros((frame.height, frame.width), np.float32)
    for right, side in _SIDES:
        severity = min(findings[f"pneumothorax_{side}"], 3)
        if not severity:
            continue
        scale = _COLLAPSED_SCALE[severity]
        anchor_u, anchor_v = 0.05, (lungs.base_right if right else lungs.base_left) - 0.03
        collapsed = distance_in_pixels(
            hemithorax_implicit(anchor_u + (frame.abs_u - anchor_u) / scale, anchor_v + (frame.v - anchor_v) / scale,
                                frame.patient_right, lungs)
        )  # fmt: skip
        side_mask = frame.side(right)
        space = np.maximum(space, lung * np.clip(0.5 + collapsed / 1.2, 0.0, 1.0) * side_mask)
        visible = (lung_distance < -1.5) & (frame.v < anchor_v - 0.04)
        line = np.maximum(line, np.exp(-((collapsed / 0.8) ** 2)) * visible * side_mask)
    return space, line

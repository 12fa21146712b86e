"""Heart and mediastinum of the frontal view, sized by the cardiothoracic ratio."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr_ldm.phantom.anatomy import Anatomy
from cxr_ldm.phantom.geometry import PixelFrame
from cxr_ldm.phantom.lungs import LungOutline
from cxr_ldm.phantom.shapes import distance_in_pixels, smoothstep

__all__ = ["CTR_BY_SEVERITY", "HeartPlacement", "heart_and_mediastinum"]

# Cardiothoracic ratio range per cardiomegaly severity (normal drawn per subject in 0.42..0.48).
CTR_BY_SEVERITY = ((0.0, 0.0), (0.53, 0.57), (0.60, 0.64), (0.67, 0.72))


@dataclass(frozen=True)
class HeartPlacement:
    """Where the heart ended up, for findings and devices that sit against it."""

    center_u: float
    center_v: float
    half_width: float  # half of the horizontal extent


def heart_and_mediastinum(
    frame: PixelFrame, lungs: LungOutline, anatomy: Anatomy, severity: int, rng: np.random.Generator, ap: bool
) -> tuple[np.ndarray, np.ndarray, HeartPlacement]:
    """Heart silhouette sized by the cardiothoracic ratio, about 2/3 of it on the patient's left, and the upper
    mediastinum; returns both masks and where the heart sits.

    The left border is a long convex arc from the mediastinum down to the apex on the left dome, the
    right border a shorter arc; below their widest points both run down into the diaphragm, so the
    heart rests on it instead of floating above the lung bases. AP: the heart looks larger (magnified).
    """
    low, high = CTR_BY_SEVERITY[min(severity, 3)]
    drawn = rng.uniform(low, high) if severity else rng.uniform()  # one draw either way
    ctr = (drawn if severity else anatomy.ctr) + (0.04 if ap else 0.0)
    half_width = ctr * lungs.lateral_u * 1.03  # CTR x thoracic width / 2
    reach_left, reach_right = 1.3 * half_width, 0.7 * half_width
    grow = 1.0 + 1.2 * max(ctr - anatomy.ctr, 0.0)
    rise_left, rise_right = anatomy.heart_height * grow, 0.6 * anatomy.heart_height * grow
    widest_v_left, widest_v_right = lungs.dome_left - 0.015, lungs.dome_right + 0.005
    above_left = np.clip((widest_v_left - frame.v) / rise_left, 0.0, 1.0)
    below_left = np.clip((frame.v - widest_v_left) / 0.12, 0.0, 1.0)
    border_left = reach_left * np.sqrt(1.0 - above_left * above_left) * (1.0 - 0.6 * below_left * below_left)
    above_right = np.clip((widest_v_right - frame.v) / rise_right, 0.0, 1.0)
    border_right = -reach_right * np.sqrt(1.0 - above_right * above_right)
    implicit = np.maximum(
        np.maximum(border_right - frame.u, frame.u - border_left), widest_v_left - rise_left - frame.v
    )
    heart = np.clip(0.5 - distance_in_pixels(implicit) / 1.5, 0.0, 1.0)
    center_u, center_v = 0.5 * (reach_left - reach_right), widest_v_left
    # Upper mediastinum: narrow at the thoracic inlet, aortic knob on the patient's left.
    knob_v = lungs.apex + 0.17
    knob = anatomy.knob * np.exp(-(((frame.v - knob_v) / 0.035) ** 2))
    trunk = (
        0.6 * anatomy.knob * smoothstep(frame.v, knob_v, knob_v + 0.08)
    )  # pulmonary trunk down to the heart
    left_bulge = (knob + trunk) * (~frame.patient_right)
    half = anatomy.mediastinum * (0.85 + 0.35 * np.clip((frame.v - lungs.apex) / 0.35, 0.0, 1.0)) + left_bulge
    mediastinum = np.clip(0.5 - (frame.abs_u - half) * (frame.width / 2.5), 0.0, 1.0)
    return heart, mediastinum, HeartPlacement(float(center_u), float(center_v), float(half_width))

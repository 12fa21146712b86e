"""The lateral phantom radiograph (``prepare`` drops it; cheap on purpose): anterior on the image left."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from cxr_ldm.phantom.anatomy import Anatomy
from cxr_ldm.phantom.exposure import expose
from cxr_ldm.phantom.geometry import Pose, anatomy_coordinates, to_pixel_points
from cxr_ldm.phantom.heart import CTR_BY_SEVERITY
from cxr_ldm.phantom.pa_findings import EFFUSION_HEIGHT
from cxr_ldm.phantom.shapes import (
    bezier_points,
    cylinder_profile,
    distance_in_pixels,
    smooth_noise,
    smoothstep,
)
from cxr_ldm.phantom.view_setup import setup_view

__all__ = ["render_lateral"]


def _body_and_arms(
    u: np.ndarray, v: np.ndarray, pixels: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The torso between the chest wall (left) and the back (right), narrowing to the neck; the raised arms;
    and the u of the anterior chest wall."""
    front = -0.34 - 0.06 * np.clip((v - 0.25) / 0.6, 0.0, 1.0) ** 0.5
    back = 0.4 - 0.05 * ((v - 0.7) / 0.6) ** 2
    neck = smoothstep(v, 0.0, 0.2)
    front = front * (0.45 + 0.55 * neck)
    body = np.clip(0.5 - (np.maximum(front - u, u - back)) * pixels, 0.0, 1.0)
    arms = np.exp(-(((u / 0.32) ** 2 + ((v - 0.1) / 0.16) ** 2) ** 2))
    return body, arms, front


def render_lateral(
    findings: dict[str, int],
    rng: np.random.Generator,
    size: int,
    height: int | None = None,
    anatomy: Anatomy | None = None,
) -> np.ndarray:
    """A lateral projection (uint8, ``height`` x ``size``): anterior on the image left, spine on the right.

    Cheap on purpose (``prepare`` keeps PA only): heart size, pleural fluid in the posterior sulcus and
    tubes follow the findings; pneumothorax, nodule and consolidation are not drawn.
    """
    view = setup_view(findings, rng, size, height, anatomy)
    build, found, width, height = view.anatomy, view.findings, view.width, view.height
    pose = Pose(angle=float(view.pose_rng.normal(0, 0.03)), shift_u=float(view.pose_rng.uniform(-0.03, 0.03)),
                shift_v=0.0, zoom=1.0, center_v=height / (2 * width), anatomy_center_v=0.6)  # fmt: skip
    u, v = anatomy_coordinates(width, height, pose)
    pixels = np.float32(width / 1.5)  # pixels per anatomy unit, for antialiased edges
    apex, base = build.apex - 0.02, build.base + 0.03

    body, arms, front = _body_and_arms(u, v, pixels)

    lung, diaphragm = _lung_and_diaphragm(u, v, apex, base, build.dome)
    heart = _heart(u, v, base, build, found["cardiomegaly"], pixels)
    above_diaphragm = smoothstep(diaphragm - v, -0.005, 0.01)
    spine, sternum, trachea = _spine_sternum_trachea(u, v, apex, front, pixels)

    fluid = np.zeros((height, width), np.float32)
    effusion = max(found["pleural_effusion_left"], found["pleural_effusion_right"])
    if effusion:  # fluid collects in the posterior costophrenic sulcus first
        top = base - EFFUSION_HEIGHT[effusion] * (base - apex) - 0.1 * np.clip((u + 0.1) / 0.3, 0.0, 1.0)
        fluid = smoothstep(v, top, top + 0.03)
    air = lung * (1.0 - 0.7 * heart) * (1.0 - fluid)
    texture = smooth_noise(view.texture_rng, (height, width), 30)
    attenuation = (
        0.8 * body
        + 0.12 * arms * body
        - 0.45 * air
        + lung * (0.06 + 0.02 * texture)
        + 0.06 * heart * above_diaphragm
        + 0.1 * spine
        + 0.12 * sternum
        - 0.08 * trachea
    )
    if found["support_devices"]:  # one tube down the trachea
        canvas = Image.new("L", (width, height), 0)
        points = bezier_points((-0.05, -0.05), (-0.02, 0.2), (0.0, apex + 0.18))
        ImageDraw.Draw(canvas).line(
            to_pixel_points(points, width, pose), fill=255, width=max(1, round(width * 0.008))
        )
        attenuation = attenuation + np.asarray(canvas, dtype=np.float32) * np.float32(0.5 / 255.0)
    return expose(attenuation, view.pose_rng.uniform(size=4), view.texture_rng, width, height)


def _lung_and_diaphragm(
    u: np.ndarray, v: np.ndarray, apex: float, base: float, dome: float
) -> tuple[np.ndarray, np.ndarray]:
    """Lungs (0..1) between the retrosternal and the retrocardiac air, over domes that rise anteriorly; and the
    diaphragm's height at each column."""
    height_fraction = np.clip((v - apex) / (base - apex), 0.0, 1.0)
    lung_front = -0.08 - 0.2 * np.sqrt(1.0 - (1.0 - np.clip(height_fraction / 0.6, 0, 1)) ** 2)
    lung_back = 0.02 + 0.24 * np.sqrt(1.0 - (1.0 - np.clip(height_fraction / 0.45, 0, 1)) ** 2)
    diaphragm = base - dome + 0.12 * ((u + 0.3) / 0.5) ** 2 - 0.08
    diaphragm = np.maximum(diaphragm, base - dome - 0.1)
    lung_implicit = np.maximum(np.maximum(lung_front - u, u - lung_back), np.maximum(v - diaphragm, apex - v))
    return np.clip(0.5 - distance_in_pixels(lung_implicit) / 2.0, 0.0, 1.0), diaphragm


def _heart(u: np.ndarray, v: np.ndarray, base: float, build: Anatomy, severity: int, pixels: np.float32) -> np.ndarray:
    """The heart (0..1): anterior, on the diaphragm, growing backwards and up with the cardiomegaly severity."""
    ctr = build.ctr if not severity else float(np.mean(CTR_BY_SEVERITY[min(severity, 3)]))
    heart_radius = 0.15 * ctr / 0.45
    heart_u, heart_v = u + 0.1 - 0.5 * (heart_radius - 0.15), v - (base - build.dome - 0.03)
    heart_implicit = (
        np.sqrt((heart_u / (1.15 * heart_radius)) ** 2 + (heart_v / (0.9 * heart_radius)) ** 2) - 1.0
    )
    return np.clip(0.5 - heart_implicit * heart_radius * pixels, 0.0, 1.0)


def _spine_sternum_trachea(
    u: np.ndarray, v: np.ndarray, apex: float, front: np.ndarray, pixels: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kyphotic spine with its discs, the sternum behind the chest wall, and the trachea's air column."""
    spine_u = 0.22 + 0.04 * np.sin(np.pi * np.clip(v, 0.0, 1.2) / 1.2)  # kyphosis
    disc_period = 0.06
    disc = smoothstep(np.abs(((v / disc_period) % 1.0) - 0.5), 0.36, 0.46)
    spine = np.clip(0.5 - (np.abs(u - spine_u) - 0.045) * pixels, 0.0, 1.0) * (1.0 - 0.6 * disc)
    sternum = cylinder_profile((u - front - 0.02) / 0.012) * (v > apex + 0.04) * (v < apex + 0.42)
    trachea = cylinder_profile((u - 0.02 * v / 0.4) / 0.02) * (1.0 - smoothstep(v, apex + 0.22, apex + 0.25))
    return spine, sternum, trachea

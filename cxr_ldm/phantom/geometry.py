"""Where each pixel sits on the patient: the pose of the patient and the pixel grid in anatomy coordinates.

Anatomy coordinates are in units of the image width: ``u`` runs from -0.5 (image left) to 0.5 (image right),
``v`` from 0 (top) downwards. PA convention: the patient's RIGHT is on the image LEFT (``u < 0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PixelFrame", "Pose", "anatomy_coordinates", "to_pixel_points"]


@dataclass(frozen=True)
class Pose:
    """How the patient stands in the image: rotation, shift and zoom about a centre."""

    angle: float
    shift_u: float
    shift_v: float
    zoom: float
    center_v: float  # v of the rotation centre in image units
    anatomy_center_v: float  # the same point in anatomy units


def anatomy_coordinates(width: int, height: int, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """Anatomy coordinates (u, v) of every pixel centre (rotation, shift and zoom of the patient)."""
    image_u = ((np.arange(width, dtype=np.float32) + 0.5) / width - 0.5 - pose.shift_u)[None, :]
    image_v = ((np.arange(height, dtype=np.float32) + 0.5) / width - pose.center_v - pose.shift_v)[:, None]
    cos, sin = np.float32(np.cos(pose.angle)), np.float32(np.sin(pose.angle))
    u = (cos * image_u + sin * image_v) / pose.zoom
    v = (-sin * image_u + cos * image_v) / pose.zoom + pose.anatomy_center_v
    return u.astype(np.float32), v.astype(np.float32)


def to_pixel_points(points: np.ndarray, width: int, pose: Pose) -> list[tuple[float, float]]:
    """Inverse of :func:`anatomy_coordinates` for polylines: anatomy (u, v) -> pixel (x, y)."""
    x = points[:, 0] * pose.zoom
    y = (points[:, 1] - pose.anatomy_center_v) * pose.zoom
    cos, sin = np.cos(pose.angle), np.sin(pose.angle)
    image_u = cos * x - sin * y + pose.shift_u
    image_v = sin * x + cos * y + pose.center_v + pose.shift_v
    return list(zip(((image_u + 0.5) * width - 0.5).tolist(), (image_v * width - 0.5).tolist(), strict=True))


@dataclass(frozen=True)
class PixelFrame:
    """The pixel grid in anatomy coordinates, shared by every layer of one image."""

    u: np.ndarray  # signed, patient's right < 0
    v: np.ndarray
    abs_u: np.ndarray  # |u|: mirrored structures are drawn once for both sides
    patient_right: np.ndarray  # u < 0
    width: int
    height: int

    @classmethod
    def of(cls, width: int, height: int, pose: Pose) -> PixelFrame:
        u, v = anatomy_coordinates(width, height, pose)
        return cls(u, v, np.abs(u), u < 0, width, height)

    def side(self, right: bool) -> np.ndarray:
        """The mask of one side of the patient."""
        return self.patient_right if right else ~self.patient_right

"""Support devices of the frontal view: tubes, lines and a pacemaker as bright (metal / contrast) strokes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cxr_ldm.phantom.geometry import Pose, to_pixel_points
from cxr_ldm.phantom.heart import HeartPlacement
from cxr_ldm.phantom.lungs import LungOutline
from cxr_ldm.phantom.schema import DEVICE_ETT, DEVICE_LINE, DEVICE_NG, DEVICE_PACEMAKER
from cxr_ldm.phantom.shapes import bezier_points
from cxr_ldm.phantom.soft_tissue import carina_height

__all__ = ["draw_devices"]


def draw_devices(
    devices: int, width: int, height: int, pose: Pose, lungs: LungOutline, heart: HeartPlacement
) -> np.ndarray | float:
    """The devices of the ``devices`` bit mask, drawn with PIL then blurred (attenuation; 0.0 when none)."""
    if not devices:
        return 0.0
    carina = carina_height(lungs)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    thin = max(1, round(width * 0.006))

    def stroke(points: np.ndarray) -> list[tuple[float, float]]:
        return to_pixel_points(points, width, pose)

    if devices & DEVICE_ETT:  # endotracheal tube: a faint tube wall around a bright radiopaque stripe
        points = stroke(bezier_points((0.0, -0.05), (0.004, 0.15), (0.0, carina - 0.05)))
        draw.line(points, fill=110, width=max(2, round(width * 0.022)), joint="curve")
        draw.line(points, fill=255, width=thin, joint="curve")
    if devices & DEVICE_LINE:  # right internal jugular catheter ending in the SVC
        points = bezier_points((-0.12, -0.05), (-0.09, 0.2), (-0.02, 0.24), (-0.035, carina + 0.02))
        draw.line(stroke(points), fill=230, width=thin, joint="curve")
    if devices & DEVICE_PACEMAKER:  # left chest wall generator, lead through the SVC into the RV apex
        generator_u, generator_v = 0.27, lungs.apex + 0.08
        box = np.array([(generator_u - 0.05, generator_v - 0.032), (generator_u + 0.05, generator_v - 0.032),
                        (generator_u + 0.05, generator_v + 0.032), (generator_u - 0.05, generator_v + 0.032)])  # fmt: skip
        draw.polygon(stroke(box), fill=255)
        right_ventricle = (heart.center_u + 0.45 * heart.half_width, heart.center_v + 0.05)
        points = bezier_points((generator_u - 0.04, generator_v), (0.05, generator_v - 0.05), (-0.04, carina),
                               (-0.07, heart.center_v - 0.02), right_ventricle, n=32)  # fmt: skip
        draw.line(stroke(points), fill=240, width=thin, joint="curve")
    if devices & DEVICE_NG:  # nasogastric tube down the oesophagus into the stomach
        points = bezier_points((0.01, -0.05), (0.03, 0.6), (0.02, lungs.dome_left + 0.05),
                               (0.2, lungs.dome_left + 0.1), n=32)  # fmt: skip
        draw.line(stroke(points), fill=200, width=max(1, round(width * 0.008)), joint="curve")
    canvas = canvas.filter(ImageFilter.GaussianBlur(max(0.5, width / 400)))
    return np.asarray(canvas, dtype=np.float32) * np.float32(0.55 / 255.0)

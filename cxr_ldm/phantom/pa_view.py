"""The frontal (PA, or portable AP) phantom radiograph, assembled from its layers.

The picture is built as an attenuation map (soft tissue minus lung air plus bone, heart, fluid, metal) and then
exposed, so a finding changes the image the way it would on film: effusion and consolidation replace air with
water density, a pneumothorax adds air and removes lung markings. Every layer is an analytic shape evaluated on
the whole pixel grid at once (numpy, float32): a 256 px image costs a few milliseconds and the same seed gives
the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr_ldm.phantom.anatomy import Anatomy
from cxr_ldm.phantom.bones import bones
from cxr_ldm.phantom.devices import draw_devices
from cxr_ldm.phantom.exposure import expose
from cxr_ldm.phantom.geometry import PixelFrame, Pose
from cxr_ldm.phantom.heart import heart_and_mediastinum
from cxr_ldm.phantom.lungs import LungOutline, diaphragm_height, lung_field, lung_markings, lung_outline
from cxr_ldm.phantom.pa_findings import consolidation_opacity, nodule_opacity, pleural_effusion, pneumothorax
from cxr_ldm.phantom.shapes import smoothstep
from cxr_ldm.phantom.soft_tissue import airways, body_thickness, breast_shadows, gastric_bubble
from cxr_ldm.phantom.view_setup import ViewSetup, setup_view

__all__ = ["render_pa"]


@dataclass(frozen=True)
class _Positioning:
    """The draws of the pose stream: how the patient stands, breathes and is exposed."""

    pose: Pose
    inspiration: float  # shift of the lung bases (AP: shallower)
    exposure_knobs: np.ndarray  # four uniform draws for the film response (exposure.expose)


def _position_patient(view: ViewSetup, ap: bool) -> _Positioning:
    rng = view.pose_rng
    pose = Pose(
        angle=float(rng.normal(0.0, 0.03)),
        shift_u=float(rng.uniform(-0.025, 0.025)),
        shift_v=float(rng.uniform(-0.025, 0.025)),
        zoom=float(rng.uniform(0.95, 1.04)),
        center_v=view.height / (2 * view.width),
        anatomy_center_v=0.6,
    )
    inspiration = float(rng.normal(0.0, 0.012)) - (0.045 if ap else 0.0)
    return _Positioning(pose, inspiration, rng.uniform(size=4))


@dataclass(frozen=True)
class _Layers:
    """Every layer of one frontal image, each on the pixel grid (or 0.0 when absent)."""

    body: np.ndarray
    lung: np.ndarray
    lung_distance: np.ndarray  # signed distance to the lung edge, pixels, negative inside
    markings: np.ndarray
    heart: np.ndarray
    mediastinum: np.ndarray
    fluid: np.ndarray
    opacity: np.ndarray
    pleural_space: np.ndarray
    pleural_line: np.ndarray
    bone: np.ndarray
    airways: np.ndarray
    gastric_bubble: np.ndarray
    breasts: np.ndarray
    devices: np.ndarray | float
    above_diaphragm: np.ndarray


def _draw_layers(
    view: ViewSetup, positioning: _Positioning, frame: PixelFrame, lungs: LungOutline, ap: bool
) -> _Layers:
    """Anatomy, then each finding, then the extras. The order keeps each random stream's draws as they were."""
    anatomy, findings = view.anatomy, view.findings
    lung, lung_distance = lung_field(frame, lungs)
    heart, mediastinum, heart_place = heart_and_mediastinum(
        frame, lungs, anatomy, findings["cardiomegaly"], view.finding_rng, ap
    )
    fluid = pleural_effusion(frame, lungs, findings)
    opacity = consolidation_opacity(frame, lungs, findings, view.finding_rng, heart_place)
    nodule = nodule_opacity(frame, lungs, findings, view.finding_rng, heart_place)
    if nodule is not None:
        opacity = np.maximum(opacity, nodule)
    pleural_space, pleural_line = pneumothorax(frame, lungs, findings, lung, lung_distance)
    body = body_thickness(frame, anatomy)
    markings = lung_markings(frame, lungs, view.texture_rng)
    devices = draw_devices(findings["devices"] if findings["support_devices"] else 0, frame.width, frame.height,
                           positioning.pose, lungs, heart_place)  # fmt: skip
    return _Layers(
        body=body,
        lung=lung,
        lung_distance=lung_distance,
        markings=markings,
        heart=heart,
        mediastinum=mediastinum,
        fluid=fluid,
        opacity=opacity,
        pleural_space=pleural_space,
        pleural_line=pleural_line,
        bone=bones(frame, lungs, anatomy, lung, ap),
        airways=airways(frame, lungs),
        gastric_bubble=gastric_bubble(frame, lungs),
        breasts=breast_shadows(frame, lungs, anatomy),
        devices=devices,
        above_diaphragm=smoothstep(
            diaphragm_height(frame.abs_u, frame.patient_right, lungs) - frame.v, -0.004, 0.006
        ),
    )


def _attenuation(layers: _Layers, width: int) -> np.ndarray:
    """Sum the layers: lung air thins towards the edges and is displaced by heart, fluid and opacity; a
    pneumothorax adds air without markings."""
    depth = smoothstep(-layers.lung_distance / width, 0.0, 0.07)  # lungs are thinner towards their edges
    air = layers.lung * (0.65 + 0.35 * depth) * (1.0 - layers.mediastinum) * (1.0 - 0.85 * layers.heart)
    air *= (1.0 - layers.fluid) * (1.0 - layers.opacity)
    air = air + 0.25 * layers.pleural_space
    lung_tissue = (
        layers.markings * (1.0 - layers.pleural_space) * (1.0 - layers.fluid) * layers.lung
        * (1.0 - layers.mediastinum)
    )  # fmt: skip
    return (
        0.8 * layers.body * (1.0 - 0.45 * layers.gastric_bubble)
        - 0.5 * air
        + lung_tissue
        + 0.06 * layers.heart * layers.above_diaphragm
        + 0.04 * layers.mediastinum
        - 0.07 * layers.airways * layers.mediastinum
        + layers.bone * (0.5 + 0.5 * layers.body)
        + 0.08 * layers.breasts
        + 0.05 * layers.fluid * layers.lung
        + 0.25 * layers.pleural_line
        + layers.devices
    )


def render_pa(
    findings: dict[str, int],
    rng: np.random.Generator,
    size: int,
    height: int | None = None,
    anatomy: Anatomy | None = None,
    ap: bool = False,
) -> np.ndarray:
    """A frontal chest radiograph (uint8, ``height`` x ``size``) showing ``findings``.

    ``findings`` maps :data:`~cxr_ldm.phantom.schema.FINDING_COLUMNS` to severities 0..3 (missing = 0) and may
    fix the :data:`~cxr_ldm.phantom.schema.DETAIL_KEYS`. The generator is split into independent streams
    (anatomy, pose/exposure, texture/noise, finding details), so the same generator state with and without a
    finding gives the same picture apart from that finding. ``height`` defaults to about 1.2 x ``size``.
    ``ap`` renders the portable AP look (magnified heart, lower lung volumes, flatter clavicles).
    """
    view = setup_view(findings, rng, size, height, anatomy)
    positioning = _position_patient(view, ap)
    frame = PixelFrame.of(view.width, view.height, positioning.pose)
    lungs = lung_outline(view.anatomy, positioning.inspiration, ap)
    layers = _draw_layers(view, positioning, frame, lungs, ap)
    attenuation = _attenuation(layers, view.width)
    return expose(attenuation, positioning.exposure_knobs, view.texture_rng, view.width, view.height)

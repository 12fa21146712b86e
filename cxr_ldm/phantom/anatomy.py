"""One phantom patient's build: drawn once per subject, shared by all of that subject's studies and views.

Lengths are in units of the image width, heights (``v``) from the top of the image downwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Anatomy", "sample_anatomy"]


@dataclass(frozen=True)
class Anatomy:
    """One patient's build: stays the same across that patient's studies."""

    body_half: float  # half width of the torso
    neck_half: float
    shoulder: float  # v where the shoulders reach full width
    apex: float  # v of the lung apices
    base: float  # v of the right costophrenic angle
    dome: float  # height of the right hemidiaphragm dome above its costophrenic angle
    left_drop: float  # the left hemidiaphragm sits this much lower
    lung_center: float  # |u| of the lung centre
    lung_half: float  # half width of one lung
    ctr: float  # cardiothoracic ratio without cardiomegaly
    heart_height: float  # vertical reach of the left heart border
    mediastinum: float  # half width of the upper mediastinum
    knob: float  # size of the aortic knob
    rib_spacing: float
    rib_offset: float
    female: bool


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    uniform = rng.uniform
    return Anatomy(
        body_half=uniform(0.43, 0.49),
        neck_half=uniform(0.09, 0.12),
        shoulder=uniform(0.11, 0.16),
        apex=uniform(0.15, 0.19),
        base=uniform(0.84, 0.9),
        dome=uniform(0.085, 0.125),
        left_drop=uniform(0.015, 0.035),
        lung_center=uniform(0.205, 0.225),
        lung_half=uniform(0.155, 0.18),
        ctr=uniform(0.42, 0.48),
        heart_height=uniform(0.22, 0.28),
        mediastinum=uniform(0.065, 0.08),
        knob=uniform(0.025, 0.045),
        rib_spacing=uniform(0.052, 0.06),
        rib_offset=uniform(0.0, 1.0),
        female=bool(rng.random() < 0.5),
    )

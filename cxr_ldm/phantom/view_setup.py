"""What every view of one study shares: the anatomy, the completed findings and independent random streams."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr_ldm.phantom.anatomy import Anatomy, sample_anatomy
from cxr_ldm.phantom.findings import complete_details

__all__ = ["ViewSetup", "setup_view"]


@dataclass(frozen=True)
class ViewSetup:
    anatomy: Anatomy
    findings: dict[str, int]  # severities and details (complete_details)
    pose_rng: np.random.Generator  # pose and exposure
    texture_rng: np.random.Generator  # lung markings and noise
    finding_rng: np.random.Generator  # the shape of each finding
    width: int
    height: int


def setup_view(
    findings: dict[str, int],
    rng: np.random.Generator,
    size: int,
    height: int | None,
    anatomy: Anatomy | None,
) -> ViewSetup:
    """Split ``rng`` into independent streams (anatomy, pose/exposure, texture/noise, finding details), so the
    same generator state with and without a finding gives the same picture apart from that finding."""
    anatomy_rng, pose_rng, texture_rng, finding_rng = (
        np.random.default_rng(int(x)) for x in rng.integers(0, 2**63 - 1, 4)
    )
    build = anatomy if anatomy is not None else sample_anatomy(anatomy_rng)
    if height is None:
        height = round(size * pose_rng.uniform(1.12, 1.3))
    completed = complete_details(findings, finding_rng)
    return ViewSetup(build, completed, pose_rng, texture_rng, finding_rng, int(size), int(height))

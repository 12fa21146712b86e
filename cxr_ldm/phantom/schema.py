"""The phantom's vocabulary: finding columns, detail keys, device flags and file names (the MIMIC files' own
columns are ``cxr_ldm.data.mimic``'s).

Kept apart from the rendering and the writing so that readers of phantom trees (the metrics) import names only.
"""

from __future__ import annotations

__all__ = [
    "ALL_DEVICES",
    "DETAIL_KEYS",
    "DEVICE_ETT",
    "DEVICE_LINE",
    "DEVICE_NG",
    "DEVICE_PACEMAKER",
    "FINDING_COLUMNS",
    "GROUND_TRUTH_FILE",
]

# Severity per finding: 0 absent, 1 small/mild, 2 moderate, 3 large (nodule: 3 = mass; devices: count).
FINDING_COLUMNS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion_left",
    "pleural_effusion_right",
    "pneumothorax_left",
    "pneumothorax_right",
    "nodule",
    "consolidation_left",
    "consolidation_right",
    "support_devices",
)

# Where a finding sits, so the report can name what the image shows. Zones: 0 upper, 1 middle
# (right middle lobe / lingula), 2 lower. Sides: 0 right, 1 left.
DETAIL_KEYS: tuple[str, ...] = (
    "nodule_side",
    "nodule_zone",
    "consolidation_right_zone",
    "consolidation_left_zone",
    "devices",
)

# Bits of the ``devices`` detail: endotracheal tube, central line, pacemaker, nasogastric tube.
DEVICE_ETT, DEVICE_LINE, DEVICE_PACEMAKER, DEVICE_NG = 1, 2, 4, 8
ALL_DEVICES: tuple[int, ...] = (DEVICE_ETT, DEVICE_LINE, DEVICE_PACEMAKER, DEVICE_NG)

# Per image: dicom_id, subject_id, study_id, ViewPosition, the finding severities and ``normal``.
GROUND_TRUTH_FILE = "phantom_findings.csv.gz"

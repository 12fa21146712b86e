"""What one phantom study shows: finding severities, then where each finding sits.

A findings dict maps :data:`~cxr_ldm.phantom.schema.FINDING_COLUMNS` to severities 0..3 and, once completed,
:data:`~cxr_ldm.phantom.schema.DETAIL_KEYS` to the side, zone and devices; the image and the report are both
drawn from that one dict, so they agree.
"""

from __future__ import annotations

import numpy as np

from cxr_ldm.phantom.schema import ALL_DEVICES, DETAIL_KEYS, DEVICE_ETT, FINDING_COLUMNS

__all__ = ["complete_details", "sample_findings"]

_KINDS = ("cardiomegaly", "effusion", "pneumothorax", "nodule", "consolidation", "devices")


def sample_findings(rng: np.random.Generator) -> dict[str, int]:
    """Severities for one study: about 40 % normal, otherwise one to three kinds of finding."""
    severities = dict.fromkeys(FINDING_COLUMNS, 0)
    if rng.random() < 0.4:
        return severities
    n_kinds = int(rng.choice(3, p=[0.55, 0.3, 0.15])) + 1
    chosen = rng.choice(len(_KINDS), size=n_kinds, replace=False, p=[0.2, 0.22, 0.12, 0.14, 0.17, 0.15])

    def draw_severity() -> int:
        return int(rng.choice(3, p=[0.4, 0.35, 0.25])) + 1

    for index in sorted(int(c) for c in chosen):
        kind = _KINDS[index]
        if kind == "cardiomegaly":
            severities["cardiomegaly"] = draw_severity()
        elif kind == "effusion":
            side = rng.choice(3, p=[0.4, 0.35, 0.25])  # right, left, bilateral
            if side in (0, 2):
                severities["pleural_effusion_right"] = draw_severity()
            if side in (1, 2):
                severities["pleural_effusion_left"] = draw_severity()
        elif kind == "pneumothorax":
            severities["pneumothorax_right" if rng.random() < 0.5 else "pneumothorax_left"] = draw_severity()
        elif kind == "nodule":
            severities["nodule"] = draw_severity()
        elif kind == "consolidation":
            side = rng.choice(3, p=[0.5, 0.4, 0.1])
            if side in (0, 2):
                severities["consolidation_right"] = draw_severity()
            if side in (1, 2):
                severities["consolidation_left"] = draw_severity()
        else:
            severities["support_devices"] = int(rng.choice(3, p=[0.5, 0.3, 0.2])) + 1
    return severities


def complete_details(findings: dict[str, int], rng: np.random.Generator) -> dict[str, int]:
    """Fill in where each finding sits (nodule lobe, consolidation lobe, which devices).

    Every value is drawn whether or not the finding is present, so two calls with the same generator
    state and different findings consume the generator identically. Values given in ``findings`` win.
    """
    completed = {key: int(findings.get(key, 0)) for key in FINDING_COLUMNS}
    drawn = {
        "nodule_side": int(rng.integers(2)),
        "nodule_zone": int(rng.integers(3)),
        "consolidation_right_zone": int(rng.choice(3, p=[0.3, 0.25, 0.45])),
        "consolidation_left_zone": int(rng.choice(3, p=[0.3, 0.2, 0.5])),
    }
    device_order = rng.permutation(len(ALL_DEVICES))
    n_devices = min(completed["support_devices"], 3)
    drawn["devices"] = int(sum(ALL_DEVICES[i] for i in device_order[:n_devices]))
    for key in DETAIL_KEYS:
        completed[key] = int(findings[key]) if key in findings else drawn[key]
    if completed["support_devices"] and not completed["devices"]:
        completed["devices"] = DEVICE_ETT
    return completed

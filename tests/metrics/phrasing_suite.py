"""The phrasing suite (``phrasing_suite.yaml``) and how a case is compared: one reading for the test and for
``benchmarks/medspacy_context.py``. No pytest or torch imports, so the benchmark runs in a venv of its own."""

from __future__ import annotations

from pathlib import Path

import yaml

from cxr_ldm.metrics.report_labels import PATHOLOGY_COLUMNS
from cxr_ldm.phantom.schema import FINDING_COLUMNS

SUITE_FILE = Path(__file__).with_name("phrasing_suite.yaml")
# the columns the held-out check of real reports scores (issue 18): cardiomegaly, sided effusion and
# pneumothorax, nodule / mass
SCORED_COLUMNS = (
    "cardiomegaly", "pleural_effusion_left", "pleural_effusion_right", "pneumothorax_left", "pneumothorax_right",
    "nodule", "mass",
)  # fmt: skip


def load_suite() -> list[dict]:
    return yaml.safe_load(SUITE_FILE.read_text(encoding="utf-8"))


def expected_labels(case: dict) -> dict[str, int]:
    """``columns: normal``: every cardiopulmonary column absent, then the case's labels on top."""
    base = dict.fromkeys(PATHOLOGY_COLUMNS, 0) if case.get("columns") == "normal" else {}
    return {**base, **case["labels"]}


def compared_labels(case: dict, labels: dict[str, int]) -> dict[str, int]:
    """The labeler's output on the columns the case checks (``phantom``, ``scored`` or all)."""
    if case.get("columns") == "phantom":
        return {c: v for c, v in labels.items() if c in FINDING_COLUMNS}
    if case.get("columns") == "scored":
        return {c: v for c, v in labels.items() if c in SCORED_COLUMNS}
    return labels

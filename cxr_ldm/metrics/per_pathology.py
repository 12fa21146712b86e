"""Results per CheXpert label: FID and adherence on the studies positive for each of the 14 labels.

Selection, as CheXGenBench's conditional analysis (``--experiment_type conditional``): for a label, the real
images of the test studies labelled positive (``1.0``; uncertain ``-1.0`` and blank are not positive), and
the generated images whose prompt was written from such a study. The runner gives, per generated image, the
CheXpert labels of the study its prompt came from (:func:`labels_of_sources` when it knows each prompt's
source row, :func:`labels_from_prompts` when it only has the prompt texts, CheXGenBench's matching; a prompt
that matches no study is read by the project's report labeler, :func:`chexpert_from_text`).

Per label:

- ``fid``: :func:`cxr_ldm.metrics.fid.fid_from_features` between those real and generated features
  (torchxrayvision's, the FID features), when both sides have at least ``min_images``; otherwise ``None``
  with the counts (a label with few positive test studies has no usable FID; KID would be less biased, but
  the counts say how much to trust either);
- ``adherence``: how often the classifier (torchxrayvision's pathology output for that label, 0.5 = its
  operating point) calls the label present on the generated images of positive prompts (``rate``), its
  AUROC between generated images of positive and of negative (``0.0``) prompts, and the same two numbers on
  the real images against their labels: what the classifier itself can do, the ceiling to compare with.

Labels without a torchxrayvision output (No Finding, Pleural Other, Support Devices) get FID only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxr_ldm.data.mimic import CHEXPERT_COLUMNS
from cxr_ldm.metrics.auroc import auroc
from cxr_ldm.metrics.fid import fid_from_features


def label_column(label: str) -> str:
    """The prepared CSVs' column of a CheXpert label (``cxr_ldm.data.preparation``): "Pleural Effusion" ->
    ``chexpert_pleural_effusion``."""
    return "chexpert_" + label.lower().replace(" ", "_")


CHEXPERT_LABELS: tuple[str, ...] = CHEXPERT_COLUMNS
LABEL_COLUMNS: dict[str, str] = {label: label_column(label) for label in CHEXPERT_LABELS}
# torchxrayvision target that scores each CheXpert label (None: no such output)
XRV_TARGETS: dict[str, str | None] = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
    "Edema": "Edema", "Enlarged Cardiomediastinum": "Enlarged Cardiomediastinum", "Fracture": "Fracture",
    "Lung Lesion": "Lung Lesion", "Lung Opacity": "Lung Opacity", "No Finding": None,
    "Pleural Effusion": "Effusion", "Pleural Other": None, "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax", "Support Devices": None,
}  # fmt: skip
SELECTION = (
    "per label: real test images of studies labelled positive (1.0; uncertain -1 and blank are not), and "
    "generated images whose prompt came from a study labelled positive (CheXGenBench's conditional analysis)"
)


def _label_matrix(labels: pd.DataFrame, what: str) -> np.ndarray:
    """``[N, 14]`` float labels (NaN where blank) in :data:`CHEXPERT_LABELS` order."""
    missing = [c for c in LABEL_COLUMNS.values() if c not in labels.columns]
    if missing:
        raise ValueError(
            f"{what} lack the CheXpert column(s) {missing}: per-pathology results need a folder prepared with "
            "mimic-cxr-2.0.0-chexpert.csv.gz present (python -m cxr_ldm.prepare)"
        )
    return labels[list(LABEL_COLUMNS.values())].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)


def labels_of_sources(source_labels: pd.DataFrame, sources: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """Labels per generated image when image ``k``'s prompt came from row ``sources[k]`` of ``source_labels``
    (``-1``: a prompt from no study, all labels blank)."""
    idx = np.asarray(sources, dtype=int)
    cols = list(LABEL_COLUMNS.values())
    base = _label_matrix(source_labels, "the prompt-source labels")
    out = np.full((len(idx), len(cols)), np.nan)
    known = idx >= 0
    out[known] = base[idx[known]]
    return pd.DataFrame(out, columns=cols)


# the report labeler's columns behind each CheXpert label (sided columns: either side); No Finding is derived
_TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis",), "Cardiomegaly": ("cardiomegaly",),
    "Consolidation": ("consolidation_left", "consolidation_right"), "Edema": ("edema",),
    "Enlarged Cardiomediastinum": ("enlarged_cardiomediastinum",), "Fracture": ("fracture",),
    "Lung Lesion": ("nodule",), "Lung Opacity": ("lung_opacity",),
    "Pleural Effusion": ("pleural_effusion_left", "pleural_effusion_right"), "Pleural Other": ("pleural_other",),
    "Pneumonia": ("pneumonia",), "Pneumothorax": ("pneumothorax_left", "pneumothorax_right"),
    "Support Devices": ("support_devices",),
}  # fmt: skip


def chexpert_from_text(text: str) -> dict[str, float]:
    """CheXpert labels (1 / 0 / -1; a label the text does not name is left out) of a report text or prompt,
    read by the project's report labeler (:mod:`cxr_ldm.metrics.report_labels`). A sided label is positive
    if either side is, uncertain if either is, absent only if both are named absent. No Finding is 1 when
    the text names findings and none but support devices is positive or uncertain (CheXpert's rule)."""
    from cxr_ldm.metrics.report_labels import read_findings

    named = read_findings(text)
    out: dict[str, float] = {}
    for label, columns in _TEXT_COLUMNS.items():
        values = [named.get(c) for c in columns]
        if 1 in values:
            out[label] = 1.0
        elif -1 in values:
            out[label] = -1.0
        elif values and all(v == 0 for v in values):
            out[label] = 0.0
    if named and not any(out.get(label) in (1.0, -1.0) for label in _TEXT_COLUMNS if label != "Support Devices"):
        out["No Finding"] = 1.0
    return out


def labels_from_text(prompts: Sequence[str]) -> pd.DataFrame:
    """Labels per prompt read from its text (:func:`chexpert_from_text`), blank where it names nothing."""
    out = pd.DataFrame(np.nan, index=range(len(prompts)), columns=list(LABEL_COLUMNS.values()))
    for k, prompt in enumerate(prompts):
        for label, value in chexpert_from_text(str(prompt)).items():
            out.iat[k, out.columns.get_loc(LABEL_COLUMNS[label])] = value
    return out


def labels_from_prompts(
    generated_prompts: Sequence[str], real_prompts: Sequence[str], real_labels: pd.DataFrame
) -> pd.DataFrame:
    """Labels per generated image by prompt text (CheXGenBench's ``isin`` rule): positive for a label if any
    real study with the identical prompt is positive, else negative if any is negative, else blank. A prompt
    that no real study has (one typed by hand) is labelled from its text by the report labeler."""
    base = _label_matrix(real_labels, "the real labels")
    if len(real_prompts) != len(base):
        raise ValueError(f"{len(real_prompts)} real prompts but {len(base)} label rows")
    rows: dict[str, list[int]] = {}
    for i, p in enumerate(real_prompts):
        rows.setdefault(p, []).append(i)
    out = np.full((len(generated_prompts), base.shape[1]), np.nan)
    for k, p in enumerate(generated_prompts):
        if p in rows:
            block = base[rows[p]]
            out[k] = np.where((block == 1).any(0), 1.0, np.where((block == 0).any(0), 0.0, np.nan))
    unmatched = [k for k, p in enumerate(generated_prompts) if p not in rows]
    if unmatched:
        out[unmatched] = labels_from_text([generated_prompts[k] for k in unmatched]).to_numpy(dtype=float)
    return pd.DataFrame(out, columns=list(LABEL_COLUMNS.values()))


def _adherence(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    pos, neg = labels == 1, labels == 0
    scored = pos | neg
    return {
        "n_positive": int(pos.sum()),
        "n_negative": int(neg.sum()),
        "rate": float((scores[pos] > 0.5).mean()) if pos.any() else None,
        "mean_score": float(scores[pos].mean()) if pos.any() else None,
        "auroc": auroc(scores[scored], pos[scored]),
    }


def per_pathology_report(
    real_labels: pd.DataFrame,
    generated_labels: pd.DataFrame,
    real_features: np.ndarray,
    generated_features: np.ndarray,
    real_scores: np.ndarray | None = None,
    generated_scores: np.ndarray | None = None,
    score_names: Sequence[str] | None = None,
    min_images: int = 10,
    targets: Mapping[str, str | None] = XRV_TARGETS,
    protocol: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``metrics.json`` stores under ``per_pathology`` (module docstring).

    ``real_labels`` / ``generated_labels``: label frames aligned with ``real_features`` / ``generated_features``
    (rows = images; ``chexpert_*`` columns). ``real_scores`` / ``generated_scores``: ``[N, len(score_names)]``
    classifier outputs in 0..1 (0.5 = decision), e.g. ``XRVFeatureExtractor.classify`` with its ``targets``;
    without them only FID is computed.
    """
    real_y = _label_matrix(real_labels, "the real labels")
    gen_y = _label_matrix(generated_labels, "the generated images' labels")
    real_f, gen_f = np.asarray(real_features), np.asarray(generated_features)
    if len(real_y) != len(real_f) or len(gen_y) != len(gen_f):
        raise ValueError(
            f"labels and features differ in length: real {len(real_y)} vs {len(real_f)}, generated "
            f"{len(gen_y)} vs {len(gen_f)}"
        )
    names = list(score_names) if score_names is not None else []
    have_scores = real_scores is not None and generated_scores is not None and bool(names)
    per: dict[str, Any] = {}
    for j, label in enumerate(CHEXPERT_LABELS):
        real_pos, gen_pos = real_y[:, j] == 1, gen_y[:, j] == 1
        entry: dict[str, Any] = {
            "column": LABEL_COLUMNS[label],
            "n_real": int(real_pos.sum()),
            "n_generated": int(gen_pos.sum()),
            "fid": None,
        }
        if min(entry["n_real"], entry["n_generated"]) >= max(2, min_images):
            entry["fid"] = fid_from_features(real_f[real_pos], gen_f[gen_pos])
        else:
            entry["fid_note"] = f"fewer than {max(2, min_images)} real or generated images"
        target = targets.get(label)
        if have_scores and target is not None and target in names:
            c = names.index(target)
            entry["adherence"] = {
                "classifier_output": target,
                "generated": _adherence(np.asarray(generated_scores)[:, c], gen_y[:, j]),
                "real": _adherence(np.asarray(real_scores)[:, c], real_y[:, j]),
            }
        else:
            entry["adherence"] = None
        per[label] = entry
    out: dict[str, Any] = {
        "selection": SELECTION,
        "min_images": int(min_images),
        "n_real": int(len(real_f)),
        "n_generated": int(len(gen_f)),
        "labels": per,
    }
    if protocol is not None:
        out["protocol"] = dict(protocol)
    return out

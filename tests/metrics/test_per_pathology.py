"""Per-pathology FID and adherence on phantom-labelled data (the prepared phantom split's CheXpert columns),
against independent computations: pandas selection, scipy's sqrtm FID, sklearn's AUROC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import linalg
from sklearn.metrics import roc_auc_score

from cxr_ldm.metrics.per_pathology import (
    CHEXPERT_LABELS,
    XRV_TARGETS,
    label_column,
    labels_from_prompts,
    labels_of_sources,
    per_pathology_report,
)
from cxr_ldm.metrics.sources import split_set


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.fixture(scope="module")
def phantom_labels(phantom_dirs: tuple[Path, Path]) -> pd.DataFrame:
    labels = split_set(phantom_dirs[1], "train").chexpert
    assert labels is not None and len(labels) > 100
    return labels


def test_columns_are_the_prepared_ones(phantom_labels: pd.DataFrame):
    assert len(CHEXPERT_LABELS) == 14
    assert label_column("Pleural Effusion") == "chexpert_pleural_effusion"
    assert {label_column(lab) for lab in CHEXPERT_LABELS} == set(phantom_labels.columns)


def test_fid_and_adherence_per_label_equal_independent_computations(phantom_labels: pd.DataFrame):
    rng = np.random.default_rng(0)
    real = phantom_labels.iloc[: len(phantom_labels) // 2].reset_index(drop=True)
    sources = rng.integers(0, len(real), size=150)  # each generated prompt drawn from a real study
    generated = labels_of_sources(real, sources)
    d = 6
    real_f, gen_f = rng.normal(size=(len(real), d)), rng.normal(size=(len(generated), d)) + 0.3
    names = ["Effusion", "Cardiomegaly", "Pneumothorax", "Atelectasis", "Other"]
    real_s, gen_s = rng.uniform(size=(len(real), len(names))), rng.uniform(size=(len(generated), len(names)))
    out = per_pathology_report(real, generated, real_f, gen_f, real_s, gen_s, names, min_images=5)
    assert out["n_real"] == len(real) and out["n_generated"] == 150 and out["min_images"] == 5

    checked_fid = checked_adherence = 0
    for label in CHEXPERT_LABELS:
        col = label_column(label)
        entry = out["labels"][label]
        real_pos = real[col].to_numpy() == 1
        gen_pos = real[col].to_numpy()[sources] == 1  # independent: the source study's label
        assert (entry["n_real"], entry["n_generated"]) == (real_pos.sum(), gen_pos.sum())
        if min(real_pos.sum(), gen_pos.sum()) >= 5:
            assert entry["fid"] == pytest.approx(scipy_fid(real_f[real_pos], gen_f[gen_pos]), rel=1e-6)
            checked_fid += 1
        else:
            assert entry["fid"] is None and "fewer than 5" in entry["fid_note"]
        target = XRV_TARGETS[label]
        if target not in names:
            assert entry["adherence"] is None
            continue
        c = names.index(target)
        for side, labels, scores in (("generated", real[col].to_numpy()[sources], gen_s),
                                     ("real", real[col].to_numpy(), real_s)):  # fmt: skip
            a = entry["adherence"][side]
            pos, neg = labels == 1, labels == 0
            assert (a["n_positive"], a["n_negative"]) == (pos.sum(), neg.sum())
            if pos.any():
                assert a["rate"] == pytest.approx(np.mean(scores[pos, c] > 0.5))
                assert a["mean_score"] == pytest.approx(scores[pos, c].mean())
            if pos.any() and neg.any():
                keep = pos | neg
                assert a["auroc"] == pytest.approx(roc_auc_score(pos[keep], scores[keep, c]), abs=1e-6)
                checked_adherence += 1
    assert checked_fid >= 2 and checked_adherence >= 2  # the phantom labels exercise both paths


def test_uncertain_and_blank_are_not_positive():
    cols = [label_column(lab) for lab in CHEXPERT_LABELS]
    frame = pd.DataFrame(np.nan, index=range(4), columns=cols)
    frame[label_column("Edema")] = [1.0, -1.0, 0.0, np.nan]
    out = per_pathology_report(frame, frame, np.zeros((4, 2)), np.zeros((4, 2)), min_images=1)
    assert out["labels"]["Edema"]["n_real"] == 1 and out["labels"]["Edema"]["fid"] is None  # FID needs 2
    assert out["labels"]["Edema"]["adherence"] is None  # no scores given


def test_labels_from_prompts_follow_chexgenbench_matching():
    cols = [label_column(lab) for lab in CHEXPERT_LABELS]
    real = pd.DataFrame(np.nan, index=range(3), columns=cols)
    real[label_column("Edema")] = [1.0, 0.0, 0.0]
    real[label_column("Fracture")] = [np.nan, 0.0, -1.0]
    got = labels_from_prompts(["a", "b", "zzz"], ["a", "b", "a"], real)
    assert got[label_column("Edema")].tolist()[:2] == [1.0, 0.0]  # "a": one positive study -> positive
    fracture = got[label_column("Fracture")].tolist()
    assert np.isnan(fracture[0]) and fracture[1] == 0.0  # "a": blank and uncertain -> unknown; "b": negative
    assert got.iloc[2].isna().all()  # a prompt no real study has, naming no finding


def test_prompts_no_study_has_are_labelled_from_their_text():
    cols = [label_column(lab) for lab in CHEXPERT_LABELS]
    real = pd.DataFrame(np.nan, index=range(1), columns=cols)
    typed = ["Small right pleural effusion. No pneumothorax. Possible left basilar pneumonia.",
             "No acute cardiopulmonary process.", "No pneumonia, effusions, edema, pneumothorax, nodules or masses."]
    got = labels_from_prompts(typed, ["a"], real)
    first = {lab: got[label_column(lab)][0] for lab in CHEXPERT_LABELS if got[label_column(lab)][0] == got[label_column(lab)][0]}
    assert first == {"Pleural Effusion": 1.0, "Pneumothorax": 0.0, "Pneumonia": -1.0}
    assert got[label_column("No Finding")][1] == 1.0 and got[label_column("Cardiomegaly")][1] == 0.0
    assert got[label_column("Lung Lesion")][2] == 0.0 and got[label_column("No Finding")][2] == 1.0
    assert np.isnan(got[label_column("Support Devices")][1])  # not named


def test_missing_columns_name_the_fix():
    with pytest.raises(ValueError, match=r"lack the CheXpert column\(s\).*mimic-cxr-2.0.0-chexpert.csv.gz"):
        per_pathology_report(pd.DataFrame({"x": [1]}), pd.DataFrame({"x": [1]}), np.zeros((1, 2)), np.zeros((1, 2)))

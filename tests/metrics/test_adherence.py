"""Prompt -> named findings, and the adherence scores (accuracy, AUROC) computed from classifier outputs."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
import torchxrayvision as xrv

from cxr_ldm.data.reports import parse_report, report_sentences
from cxr_ldm.metrics.adherence import (
    PATHOLOGY_COLUMNS,
    XRVJudge,
    named_findings,
    score_against_labels,
    side_free,
)
from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL, XRVFeatureExtractor
from cxr_ldm.phantom.findings import complete_details, sample_findings
from cxr_ldm.phantom.report_text import write_report
from cxr_ldm.phantom.schema import FINDING_COLUMNS


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Large right pleural effusion.", {"pleural_effusion_right": 1}),
        ("Moderate cardiomegaly.", {"cardiomegaly": 1}),
        ("Large left pneumothorax.", {"pneumothorax_left": 1}),
        ("Small bilateral pleural effusions.", {"pleural_effusion_left": 1, "pleural_effusion_right": 1}),
        ("Consolidation in the lingula of the left lung.", {"consolidation_left": 1}),
        ("A 5.2 cm mass in the right upper lung.", {"nodule": 1, "mass": 1}),  # a mass is a lung lesion
        ("Endotracheal tube terminates 4.5 cm above the carina.", {"support_devices": 1}),
        ("No pleural effusion or pneumothorax.",
         {"pleural_effusion_left": 0, "pleural_effusion_right": 0,
          "pneumothorax_left": 0, "pneumothorax_right": 0}),
        ("No acute cardiopulmonary process.", dict.fromkeys(PATHOLOGY_COLUMNS, 0)),
        ("Heart size is normal.", {"cardiomegaly": 0}),
        ("Small right pleural effusion, no pneumothorax.",
         {"pleural_effusion_right": 1, "pneumothorax_left": 0, "pneumothorax_right": 0}),
        ("The right pneumothorax is no longer seen.", {"pneumothorax_right": 0}),
        ("No left pleural effusion.", {"pleural_effusion_left": 0}),
        ("Pleural effusion.", {}),  # present but no side: not scorable per side
        ("Right pleural effusion. No acute osseous abnormality.", {"pleural_effusion_right": 1}),
        ("", {}),
    ],
)  # fmt: skip
def test_named_findings(text: str, expected: dict[str, int]):
    assert named_findings(text) == expected


def phantom_report_sentences(n: int, seed: int):
    """(findings, sentences of FINDINGS + IMPRESSION) of phantom studies, as training prompts are drawn."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        findings = complete_details(sample_findings(rng), rng)
        follow_up, female = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        text, _ = write_report(findings, rng, "CHEST (PA AND LAT)", "Chest PA and lateral", follow_up, female)
        yield findings, report_sentences(parse_report(text))


def test_phantom_reports_are_read_exactly():
    """Every statement the parser makes about a phantom report is true, and every finding present is named."""
    checked = 0
    for findings, sentences in phantom_report_sentences(300, seed=0):
        # the phantom's columns: its truth says nothing of the other CheXpert labels (atelectasis, opacity, ...)
        whole = {c: v for c, v in named_findings(" ".join(sentences)).items() if c in FINDING_COLUMNS}
        present = {c for c in FINDING_COLUMNS if findings[c] > 0}
        assert {c for c, v in whole.items() if v == 1} == present, (sentences, findings)
        assert all(findings[c] == 0 for c, v in whole.items() if v == 0), (sentences, findings)
        for sentence in sentences:  # excerpts: any single sentence must not contradict the truth either
            for column, value in named_findings(sentence).items():
                if column not in FINDING_COLUMNS:
                    continue
                assert (findings[column] > 0) == bool(value), (sentence, column, findings)
        checked += 1
    assert checked == 300


def test_scores_against_labels_equal_direct_computation():
    rng = np.random.default_rng(1)
    labels = np.full((40, 2), np.nan)
    labels[:30, 0] = rng.integers(0, 2, 30)
    labels[:, 1] = 1.0  # only positives: AUROC undefined
    scores = np.clip(np.nan_to_num(labels, nan=0.5) * 0.4 + rng.random((40, 2)) * 0.6, 0, 1)
    result = score_against_labels(["a", "b"], scores, labels)
    y, s = labels[:30, 0], scores[:30, 0]
    pos, neg = s[y == 1], s[y == 0]
    auroc = np.mean([1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg)])
    a = result["per_finding"]["a"]
    assert (a["n_present"], a["n_absent"]) == (int(y.sum()), int((1 - y).sum()))
    assert a["accuracy"] == pytest.approx(np.mean((s > 0.5) == (y == 1)))
    assert a["auroc"] == pytest.approx(auroc, abs=1e-6)
    b = result["per_finding"]["b"]
    assert b["auroc"] is None and b["accuracy"] == pytest.approx(np.mean(scores[:, 1] > 0.5))
    assert result["mean_auroc"] == pytest.approx(a["auroc"])
    assert result["mean_accuracy"] == pytest.approx((a["accuracy"] + b["accuracy"]) / 2)


def test_side_free_concepts_for_the_xrv_judge():
    assert side_free({"pleural_effusion_right": 1}) == {"pleural_effusion": 1}
    assert side_free({"pleural_effusion_right": 0}) == {}  # the left side is unknown
    assert side_free(named_findings("No acute cardiopulmonary process.")) == dict.fromkeys(
        ["cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "nodule"], 0
    )


def test_xrv_judge_outputs_and_chexpert_labels():
    judge = XRVJudge(_random_extractor())
    scores = judge.scores(torch.rand(3, 1, 32, 32))
    assert scores.shape == (3, len(judge.concepts)) and float(scores.min()) >= 0 and float(scores.max()) <= 1
    assert judge.expected("Large left pleural effusion. Heart size is normal.") == {
        "pleural_effusion": 1,
        "cardiomegaly": 0,
    }
    chexpert = pd.DataFrame(
        {"chexpert_cardiomegaly": [1.0, 0.0, -1.0, np.nan], "chexpert_pleural_effusion": [0.0] * 4}
    )
    labels = XRVJudge.labels_from_chexpert(chexpert)
    assert labels.shape == (4, 5)
    np.testing.assert_array_equal(labels[:, 0], [1.0, 0.0, np.nan, np.nan])
    np.testing.assert_array_equal(labels[:, 1], [0.0] * 4)
    assert np.isnan(labels[:, 2:]).all()  # columns the prepared split lacks are not scored


def _random_extractor() -> XRVFeatureExtractor:
    torch.manual_seed(0)
    return XRVFeatureExtractor(xrv.models.DenseNet(weights=None), RANDOM_WEIGHTS_LABEL)

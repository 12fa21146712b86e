"""The report labeler on its phrasing suite (``phrasing_suite.yaml``: MIMIC-style sentences with the labels a
radiologist labelling CheXpert gives them) and its contract: columns, values, aggregation, one labeler."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from phrasing_suite import compared_labels, expected_labels, load_suite

from cxr_ldm.metrics import adherence
from cxr_ldm.metrics.report_labels import (
    LABEL_COLUMNS,
    label_texts,
    named_findings,
    read_findings,
)

SUITE = load_suite()


def test_the_suite_covers_what_the_issue_lists():
    """At least 300 sentences, with lists of 2-8 findings after each negation and the other named patterns."""
    assert len(SUITE) >= 300
    texts = [c["text"].lower() for c in SUITE]
    for cue in ("no ", "without ", "free of ", "negative for ", "no evidence of ", " but no ", "cannot exclude",
                "may represent", "resolved", "increased", "bilateral", "left greater than right", "right-sided",
                "no longer seen", "removed", "interval clearing", "granuloma", "nodular opacity", "calcified nodule"):
        assert any(cue in t for t in texts), cue
    list_lengths = Counter(c["text"].count(",") + 1 for c in SUITE if c["group"] == "negated_list")
    assert max(list_lengths) >= 7 and min(list_lengths) <= 2


def test_phrasing_suite():
    """Every sentence gets exactly its expected labels; all mismatches are listed at once."""
    results = label_texts([c["text"] for c in SUITE])
    wrong = []
    for case, labels in zip(SUITE, results, strict=True):
        got, expected = compared_labels(case, labels), expected_labels(case)
        if got != expected:
            wrong.append(f"[{case['group']}] {case['text']!r}\n    expected {expected}\n    got      {got}")
    assert not wrong, f"{len(wrong)} of {len(SUITE)} sentences misread:\n" + "\n".join(wrong)


def test_the_issue_sentence_negates_the_whole_list():
    labels = read_findings("No pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or masses.")
    assert labels["nodule"] == 0 and labels["mass"] == 0 and labels["pneumonia"] == 0
    assert 1 not in labels.values()


def test_contract_values_columns_and_aggregation():
    assert set(read_findings("Possible left effusion. Large left pleural effusion.")) == {"pleural_effusion_left"}
    assert read_findings("Possible left effusion. Large left pleural effusion.")["pleural_effusion_left"] == 1
    assert read_findings("No left effusion. Possible left effusion.") == {"pleural_effusion_left": -1}
    assert named_findings("No left effusion. Possible left effusion.") == {}
    report = read_findings("No acute cardiopulmonary process. Mild cardiomegaly.")
    assert report["cardiomegaly"] == 1 and report["edema"] == 0
    assert list(report) == [c for c in LABEL_COLUMNS if c in report]  # columns in LABEL_COLUMNS order
    assert read_findings("") == {} and read_findings("   ") == {}
    with pytest.raises(TypeError, match="must be a string"):
        read_findings(None)  # type: ignore[arg-type]
    assert label_texts(["Small right pleural effusion.", "No pneumothorax."]) == [
        read_findings("Small right pleural effusion."), read_findings("No pneumothorax.")
    ]


def test_one_labeler_in_the_project():
    """adherence reads prompts through this labeler: the same function, not a second parser."""
    assert adherence.named_findings is named_findings
    assert adherence.read_findings is read_findings
    source = Path(adherence.__file__).read_text(encoding="utf-8")
    assert "re.compile" not in source


REPORT = """EXAMINATION:  CHEST (PA AND LAT)
INDICATION:  ___ with cardiomegaly and a left pleural effusion, eval for pneumothorax
TECHNIQUE:  Chest PA and lateral
COMPARISON:  ___, which showed a right upper lobe nodule.
FINDINGS:
Heart size is normal.  No pleural effusion or
pneumothorax.
IMPRESSION:
No acute cardiopulmonary process.
"""


def test_a_whole_report_is_labelled_from_its_findings_and_impression():
    """INDICATION and COMPARISON name findings that this image does not show: only FINDINGS and IMPRESSION
    count, read as one text; a text without sections is read whole."""
    labels = read_findings(REPORT)
    assert labels == read_findings("Heart size is normal. No pleural effusion or pneumothorax. "
                                   "No acute cardiopulmonary process.")
    assert labels["cardiomegaly"] == 0 and labels["nodule"] == 0 and labels["pneumothorax_left"] == 0
    assert label_texts([REPORT]) == [labels]
    assert read_findings("INDICATION: cough.\nMild cardiomegaly.") == {"cardiomegaly": 1}  # no sections found

"""``named_findings`` / ``read_findings`` on MIMIC-style phrasings: negation scope, pseudo-negations, uncertainty,
sides, and the ways radiologists write an enlarged heart.

Every case is written the way MIMIC-CXR reports phrase it. Expected values: 1 named present, 0 named absent,
-1 uncertain (``read_findings`` only; ``named_findings`` leaves those out). Columns not listed are not named.
"""

from __future__ import annotations

import pytest

from cxr_ldm.metrics.adherence import PATHOLOGY_COLUMNS, named_findings, read_findings

EFF = ("pleural_effusion_left", "pleural_effusion_right")
PTX = ("pneumothorax_left", "pneumothorax_right")
CONS = ("consolidation_left", "consolidation_right")


def both(columns: tuple[str, str], value: int) -> dict[str, int]:
    return dict.fromkeys(columns, value)


R_EFF, L_EFF = "pleural_effusion_right", "pleural_effusion_left"
R_PTX, L_PTX = "pneumothorax_right", "pneumothorax_left"
R_CONS, L_CONS = "consolidation_right", "consolidation_left"
HEART = "cardiomegaly"

# --------------------------------------------------------------------------- negation scope (the review's cases)
SCOPE = [
    ("No pneumothorax, but there is a large right pleural effusion.", {**both(PTX, 0), R_EFF: 1}),
    ("No pneumothorax; however, a small left pleural effusion is new.", {**both(PTX, 0), L_EFF: 1}),
    ("No pneumothorax, although there is a small left pleural effusion.", {**both(PTX, 0), L_EFF: 1}),
    ("There is no pneumothorax, but a moderate right effusion has increased.", {**both(PTX, 0), R_EFF: 1}),
    ("No pleural effusion, but there is consolidation in the right lower lobe.", {**both(EFF, 0), R_CONS: 1}),
    ("No focal consolidation, pleural effusion or pneumothorax is seen.",
     {**both(CONS, 0), **both(EFF, 0), **both(PTX, 0)}),
    ("No focal consolidation, pleural effusion, or pneumothorax.",
     {**both(CONS, 0), **both(EFF, 0), **both(PTX, 0)}),
    ("There is no focal consolidation, pleural effusion or pneumothorax.",
     {**both(CONS, 0), **both(EFF, 0), **both(PTX, 0)}),
    ("No pleural effusion or pneumothorax.", {**both(EFF, 0), **both(PTX, 0)}),
    ("No evidence of pneumothorax, and the heart is mildly enlarged.", {**both(PTX, 0), HEART: 1}),
    ("No pneumothorax, and there is a small right pleural effusion.", {**both(PTX, 0), R_EFF: 1}),
    ("No pneumothorax, small left pleural effusion.", {**both(PTX, 0), L_EFF: 1}),
    ("Small right pleural effusion, no pneumothorax.", {R_EFF: 1, **both(PTX, 0)}),
    ("Right pleural effusion without pneumothorax.", {R_EFF: 1, **both(PTX, 0)}),
    ("Moderate cardiomegaly with no pleural effusion.", {HEART: 1, **both(EFF, 0)}),
    ("The lungs are clear without focal consolidation, effusion, or pneumothorax.",
     {**both(CONS, 0), **both(EFF, 0), **both(PTX, 0)}),
    ("There is no pneumothorax and the left pleural effusion is unchanged.", {**both(PTX, 0), L_EFF: 1}),
    ("No pneumothorax, the right pleural effusion is slightly larger.", {**both(PTX, 0), R_EFF: 1}),
    ("Negative for pneumothorax; small bilateral pleural effusions persist.", {**both(PTX, 0), **both(EFF, 1)}),
    ("No new consolidation, though the left basilar consolidation persists.", {**both(CONS, 0), L_CONS: 1}),
    ("Free of pneumothorax, whereas the right effusion is larger.", {**both(PTX, 0), R_EFF: 1}),
    ("No consolidation except in the right lower lobe.", {**both(CONS, 0)}),
    ("Interval resolution of the right pneumothorax with a new small left pleural effusion.",
     {R_PTX: 0, L_EFF: 1}),
]  # fmt: skip

# --------------------------------------------------------------------------- pseudo-negations: nothing negated
PSEUDO = [
    ("No change in mild cardiomegaly.", {HEART: 1}),
    ("No significant change in the moderate right pleural effusion.", {R_EFF: 1}),
    ("No interval change in the small left pleural effusion.", {L_EFF: 1}),
    ("Without interval change, there is a small right pneumothorax.", {R_PTX: 1}),
    ("The right pleural effusion is not significantly changed.", {R_EFF: 1}),
    ("Moderate cardiomegaly is not significantly changed.", {HEART: 1}),
    ("Left lower lobe consolidation has not changed.", {L_CONS: 1}),
    ("No increase in the size of the left pleural effusion.", {L_EFF: 1}),
    ("No interval worsening of the right pneumothorax.", {R_PTX: 1}),
    ("Without significant interval change in bilateral pleural effusions.", both(EFF, 1)),
    ("Right apical pneumothorax is not substantially changed in size.", {R_PTX: 1}),
    ("No significant interval improvement in left lower lobe consolidation.", {L_CONS: 1}),
]  # fmt: skip

# --------------------------------------------------------------------------- the heart
HEART_CASES = [
    ("Heart size is mildly enlarged.", {HEART: 1}),
    ("The heart is large.", {HEART: 1}),
    ("Stable enlargement of the heart.", {HEART: 1}),
    ("Borderline cardiac enlargement.", {HEART: 1}),
    ("The cardiac silhouette is enlarged.", {HEART: 1}),
    ("Cardiac silhouette is moderately enlarged.", {HEART: 1}),
    ("Moderate enlargement of the cardiac silhouette is unchanged.", {HEART: 1}),
    ("Enlarged cardiac silhouette.", {HEART: 1}),
    ("The heart remains enlarged.", {HEART: 1}),
    ("The heart is again markedly enlarged.", {HEART: 1}),
    ("Heart size is top-normal to mildly enlarged.", {HEART: 1}),
    ("Mild cardiomegaly is stable.", {HEART: 1}),
    ("Unchanged moderate cardiomegaly.", {HEART: 1}),
    ("Severe cardiomegaly, unchanged.", {HEART: 1}),
    ("Enlarged heart.", {HEART: 1}),
    ("Heart size is increased.", {HEART: 1}),
    ("Heart size is normal.", {HEART: 0}),
    ("The heart is normal in size.", {HEART: 0}),
    ("Normal heart size.", {HEART: 0}),
    ("The heart is not enlarged.", {HEART: 0}),
    ("No cardiomegaly.", {HEART: 0}),
    ("Heart size is within normal limits.", {HEART: 0}),
    ("The cardiac silhouette is not enlarged.", {HEART: 0}),
    ("Cardiomediastinal silhouette is normal.", {HEART: 0}),
    ("Heart size is top normal.", {HEART: 0}),
    ("No evidence of cardiomegaly.", {HEART: 0}),
    ("The heart size is normal, but there is a small right pleural effusion.", {HEART: 0, R_EFF: 1}),
    ("Heart size is normal without pleural effusion.", {HEART: 0, **both(EFF, 0)}),
    ("Heart borders are obscured by a large left pleural effusion.", {L_EFF: 1}),
    ("The heart is possibly enlarged.", {HEART: -1}),
    ("Cardiomegaly cannot be excluded.", {HEART: -1}),
]  # fmt: skip

# --------------------------------------------------------------------------- sides
SIDES = [
    ("Large right pleural effusion.", {R_EFF: 1}),
    ("Small left pleural effusion.", {L_EFF: 1}),
    ("Small bilateral pleural effusions.", both(EFF, 1)),
    ("Bilateral pleural effusions, right greater than left.", both(EFF, 1)),
    ("Small right and moderate left pleural effusions.", both(EFF, 1)),
    ("Right and left pleural effusions.", both(EFF, 1)),
    ("Layering effusions in both pleural spaces.", both(EFF, 1)),
    ("Small right-sided pleural effusion is present.", {R_EFF: 1}),
    ("Blunting of the left costophrenic angle suggests a trace left effusion.", {L_EFF: -1}),
    ("Blunting of the right costophrenic angle.", {R_EFF: 1}),
    ("Sharp costophrenic angles.", both(EFF, 0)),
    ("The costophrenic angles are sharp.", both(EFF, 0)),
    ("The left costophrenic angle is sharp.", {L_EFF: 0}),
    ("No left pleural effusion.", {L_EFF: 0}),
    ("No pleural effusion on the right.", {R_EFF: 0}),
    ("Left pleural effusion has resolved.", {L_EFF: 0}),
    ("The right pneumothorax is no longer seen.", {R_PTX: 0}),
    ("Right apical pneumothorax is not visualized on this study.", {R_PTX: 0}),
    ("Tiny left apical pneumothorax.", {L_PTX: 1}),
    ("Bilateral pneumothoraces.", both(PTX, 1)),
    ("Large right pneumothorax with leftward mediastinal shift.", {R_PTX: 1}),
    ("Right lower lobe consolidation and a small left pleural effusion.", {R_CONS: 1, L_EFF: 1}),
    ("Consolidation in the lingula.", {L_CONS: 1}),
    ("Lingular consolidation.", {L_CONS: 1}),
    ("Bibasilar consolidations.", both(CONS, 1)),
    ("Patchy consolidation at the left lung base, no right-sided consolidation.", {L_CONS: 1, R_CONS: 0}),
    ("Left basilar consolidation, right lung clear.", {L_CONS: 1}),
    ("Pleural effusion.", {}),  # present but no side: not scored per side
    ("No pleural effusion.", both(EFF, 0)),
    ("Small pericardial effusion.", {}),
    ("Small left effusion; no right effusion.", {L_EFF: 1, R_EFF: 0}),
]  # fmt: skip

# --------------------------------------------------------------------------- uncertainty, kept apart
UNCERTAIN = [
    ("Cardiomegaly cannot be excluded.", {HEART: -1}),
    ("Possible small right pleural effusion.", {R_EFF: -1}),
    ("A small left pneumothorax cannot be excluded.", {L_PTX: -1}),
    ("Right lower lobe opacity may represent consolidation.", {R_CONS: -1}),
    ("Left basilar opacity may reflect atelectasis versus consolidation.", {L_CONS: -1}),
    ("Right basilar opacity, atelectasis versus consolidation.", {}),  # uncertain and no side in its clause
    ("Findings are suspicious for a right upper lobe consolidation.", {R_CONS: -1}),
    ("Probable small bilateral pleural effusions.", both(EFF, -1)),
    ("Cannot exclude a tiny right apical pneumothorax.", {R_PTX: -1}),
    ("Left pleural effusion is not excluded.", {L_EFF: -1}),
    ("Likely small left pleural effusion.", {L_EFF: -1}),
    ("No definite pneumothorax.", both(PTX, 0)),
    ("Possible left effusion, no pneumothorax.", {L_EFF: -1, **both(PTX, 0)}),
]  # fmt: skip

# --------------------------------------------------------------------------- whole impressions, other findings
OTHER = [
    ("No acute cardiopulmonary process.", dict.fromkeys(PATHOLOGY_COLUMNS, 0)),
    ("No acute intrathoracic abnormality.", dict.fromkeys(PATHOLOGY_COLUMNS, 0)),
    ("No acute cardiopulmonary process. Stable mild cardiomegaly.",
     {**dict.fromkeys(PATHOLOGY_COLUMNS, 0), HEART: 1}),
    ("A 2.3 cm nodule in the right upper lobe.", {"nodule": 1}),
    ("No suspicious pulmonary nodules or masses.", {"nodule": 0}),
    ("Left upper lobe mass, concerning for malignancy.", {"nodule": 1}),
    ("Endotracheal tube terminates 4.5 cm above the carina.", {"support_devices": 1}),
    ("Interval removal of the endotracheal tube.", {"support_devices": 0}),
    ("The nasogastric tube has been removed.", {"support_devices": 0}),
    ("Right PICC line tip in the mid SVC.", {"support_devices": 1}),
    ("Left chest wall pacemaker with leads in the right atrium and right ventricle.", {"support_devices": 1}),
    ("Mild pulmonary edema. No pneumothorax.", both(PTX, 0)),
    ("Moderate cardiomegaly. Small bilateral pleural effusions. No pneumothorax.",
     {HEART: 1, **both(EFF, 1), **both(PTX, 0)}),
    ("Heart size is mildly enlarged. There is no focal consolidation, pleural effusion or pneumothorax.",
     {HEART: 1, **both(CONS, 0), **both(EFF, 0), **both(PTX, 0)}),
    ("1. Large right pleural effusion. 2. No pneumothorax.", {R_EFF: 1, **both(PTX, 0)}),
    ("", {}),
]  # fmt: skip

ALL = SCOPE + PSEUDO + HEART_CASES + SIDES + UNCERTAIN + OTHER


@pytest.mark.parametrize("text,expected", ALL, ids=[t[:60] or "empty" for t, _ in ALL])
def test_read_findings_on_mimic_phrasings(text: str, expected: dict[str, int]):
    assert read_findings(text) == expected


@pytest.mark.parametrize("text,expected", UNCERTAIN, ids=[t[:60] for t, _ in UNCERTAIN])
def test_named_findings_leaves_uncertain_mentions_out(text: str, expected: dict[str, int]):
    assert named_findings(text) == {c: v for c, v in expected.items() if v != -1}


def test_the_review_examples():
    """The two sentences of the review: the first negation no longer negates the rest of the sentence."""
    assert named_findings("No pneumothorax, but there is a large right pleural effusion.")[R_EFF] == 1
    assert named_findings("No change in mild cardiomegaly.") == {HEART: 1}


def test_case_count():
    assert len(ALL) >= 120

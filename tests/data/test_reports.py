"""MIMIC-CXR report parsing: hand-written MIMIC-style reports with exact expectations, plus the
3,955 real Indiana University reports that torchxrayvision ships, as real sentence text."""

from __future__ import annotations

import importlib.util
import random
import re
import tarfile
import textwrap
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

import pytest

from cxr_ldm.data.reports import ReportSections, parse_report, report_sentences, split_sentences

SAMPLES = Path(__file__).parent / "report_samples"
BANNER = "                                 FINAL REPORT\n"

# file stem -> (findings, impression, report_sentences)
EXPECTED: dict[str, tuple[str, str, list[str]]] = {
    "01_standard_pa_lat": (
        "PA and lateral views of the chest provided. There is no focal consolidation, effusion, or "
        "pneumothorax. The cardiomediastinal silhouette is normal. Imaged osseous structures are intact. "
        "No free air below the right hemidiaphragm is seen.",
        "No acute intrathoracic process.",
        [
            "PA and lateral views of the chest provided.",
            "There is no focal consolidation, effusion, or pneumothorax.",
            "The cardiomediastinal silhouette is normal.",
            "Imaged osseous structures are intact.",
            "No free air below the right hemidiaphragm is seen.",
            "No acute intrathoracic process.",
        ],
    ),
    "02_impression_only_portable": (
        "",
        "Right internal jugular central venous catheter terminates in the mid SVC. No pneumothorax. "
        "Persistent mild pulmonary vascular congestion.",
        [
            "Right internal jugular central venous catheter terminates in the mid SVC.",
            "No pneumothorax.",
            "Persistent mild pulmonary vascular congestion.",
        ],
    ),
    # "FINDINGS AND IMPRESSION:" goes to the impression only, so no sentence is counted twice
    "03_findings_and_impression": (
        "",
        "The lungs are clear. The heart is normal in size. There is no pleural effusion or pneumothorax. "
        "No acute cardiopulmonary abnormality.",
        [
            "The lungs are clear.",
            "The heart is normal in size.",
            "There is no pleural effusion or pneumothorax.",
            "No acute cardiopulmonary abnormality.",
        ],
    ),
    "04_conclusion": (
        "Lung volumes are low. Bibasilar atelectasis is present. The cardiac silhouette is mildly enlarged.",
        "Low lung volumes with bibasilar atelectasis. Mild cardiomegaly.",
        [
            "Lung volumes are low.",
            "Bibasilar atelectasis is present.",
            "The cardiac silhouette is mildly enlarged.",
            "Low lung volumes with bibasilar atelectasis.",
            "Mild cardiomegaly.",
        ],
    ),
    "05_mixed_case_same_line": (
        "Heart size is normal. Mediastinal and hilar contours are unremarkable. Lungs are clear without "
        "consolidation.",
        "Normal chest radiograph.",
        [
            "Heart size is normal.",
            "Mediastinal and hilar contours are unremarkable.",
            "Lungs are clear without consolidation.",
            "Normal chest radiograph.",
        ],
    ),
    "06_numbered_impression_decimals": (
        "There is a 4.5 cm mass in the right upper lobe, previously 3.2 cm. A 1.5 x 1.2 cm nodule is seen "
        "in the left lower lobe. No pleural effusion. Heart size is normal.",
        "1. Enlarging 4.5 cm right upper lobe mass, concerning for malignancy. 2. 1.5 cm left lower lobe "
        "nodule. 3. No pleural effusion.",
        [
            "There is a 4.5 cm mass in the right upper lobe, previously 3.2 cm.",
            "A 1.5 x 1.2 cm nodule is seen in the left lower lobe.",
            "No pleural effusion.",
            "Heart size is normal.",
            "Enlarging 4.5 cm right upper lobe mass, concerning for malignancy.",
            "1.5 cm left lower lobe nodule.",
            "No pleural effusion.",
        ],
    ),
    "07_notification_after_impression": (
        "There is a moderate right apical pneumothorax measuring approximately 2 cm. There are minimally "
        "displaced fractures of the right fourth and fifth ribs. The left lung is clear.",
        "Moderate right pneumothorax. Right rib fractures.",
        [
            "There is a moderate right apical pneumothorax measuring approximately 2 cm.",
            "There are minimally displaced fractures of the right fourth and fifth ribs.",
            "The left lung is clear.",
            "Moderate right pneumothorax.",
            "Right rib fractures.",
        ],
    ),
    "08_recommendations": (
        "A 9 mm nodular opacity projects over the left mid lung. Lungs are otherwise clear. No effusion.",
        "9 mm nodular opacity in the left mid lung.",
        [
            "A 9 mm nodular opacity projects over the left mid lung.",
            "Lungs are otherwise clear.",
            "No effusion.",
            "9 mm nodular opacity in the left mid lung.",
        ],
    ),
    "09_wet_read_banner": (
        "Right internal jugular catheter terminates in the mid SVC. There is no pneumothorax. Bibasilar "
        "atelectasis is unchanged.",
        "Right IJ catheter in the mid SVC without pneumothorax.",
        [
            "Right internal jugular catheter terminates in the mid SVC.",
            "There is no pneumothorax.",
            "Bibasilar atelectasis is unchanged.",
            "Right IJ catheter in the mid SVC without pneumothorax.",
        ],
    ),
    "10_addendum_after": (
        "No focal consolidation is seen. There is no pleural effusion or pneumothorax.",
        "No acute cardiopulmonary process.",
        [
            "No focal consolidation is seen.",
            "There is no pleural effusion or pneumothorax.",
            "No acute cardiopulmonary process.",
        ],
    ),
    # an ALL-CAPS header naming the views opens findings
    "11_old_style_view_header": (
        "Compared to ___, the endotracheal tube has been withdrawn and now terminates 4.5 cm above the "
        "carina. The nasogastric tube courses below the diaphragm. Moderate pulmonary edema is unchanged.",
        "Endotracheal tube in standard position. Unchanged moderate pulmonary edema.",
        [
            "Compared to ___, the endotracheal tube has been withdrawn and now terminates 4.5 cm above the "
            "carina.",
            "The nasogastric tube courses below the diaphragm.",
            "Moderate pulmonary edema is unchanged.",
            "Endotracheal tube in standard position.",
            "Unchanged moderate pulmonary edema.",
        ],
    ),
    "12_mixed_case_text_colons": (
        "PA and lateral views of the chest: The lungs are well expanded and clear. Note: the patient is "
        "rotated to the right. The heart is normal in size.",
        "No pneumonia.",
        [
            "PA and lateral views of the chest: The lungs are well expanded and clear.",
            "Note: the patient is rotated to the right.",
            "The heart is normal in size.",
            "No pneumonia.",
        ],
    ),
    "13_structured_subheadings": (
        "LINES/TUBES: Endotracheal tube 5 cm above the carina. Left PICC tip in the cavoatrial junction. "
        "LUNGS: Low lung volumes. Left basilar opacity. PLEURA: Small left pleural effusion. HEART: Normal "
        "size.",
        "Left basilar opacity, atelectasis versus pneumonia.",
        [
            "LINES/TUBES: Endotracheal tube 5 cm above the carina.",
            "Left PICC tip in the cavoatrial junction.",
            "LUNGS: Low lung volumes.",
            "Left basilar opacity.",
            "PLEURA: Small left pleural effusion.",
            "HEART: Normal size.",
            "Left basilar opacity, atelectasis versus pneumonia.",
        ],
    ),
    "14_headers_without_colon": (
        "The lungs are clear. Heart size is normal.",
        "Normal study.",
        ["The lungs are clear.", "Heart size is normal.", "Normal study."],
    ),
    "15_inline_impression": (
        "There is a new right lower lobe opacity. No effusion.",
        "Right lower lobe pneumonia.",
        ["There is a new right lower lobe opacity.", "No effusion.", "Right lower lobe pneumonia."],
    ),
    "16_all_caps_old_report": (
        "THE HEART IS NORMAL IN SIZE. THE LUNGS ARE CLEAR. THERE IS NO EFFUSION.",
        "NO ACUTE CARDIOPULMONARY PROCESS. THE FINDINGS WERE DISCUSSED WITH DR. ___ AT 8:30 A.M. ON ___.",
        [
            "THE HEART IS NORMAL IN SIZE.",
            "THE LUNGS ARE CLEAR.",
            "THERE IS NO EFFUSION.",
            "NO ACUTE CARDIOPULMONARY PROCESS.",
            "THE FINDINGS WERE DISCUSSED WITH DR. ___ AT 8:30 A.M. ON ___.",
        ],
    ),
    "17_findings_only": (
        "Mild interstitial edema has improved since ___. Small bilateral pleural effusions persist.",
        "",
        ["Mild interstitial edema has improved since ___.", "Small bilateral pleural effusions persist."],
    ),
    "18_no_findings_no_impression": ("", "", []),
    "19_typo_impresson": (
        "Right lower lobe opacity.",
        "Pneumonia.",
        ["Right lower lobe opacity.", "Pneumonia."],
    ),
    "20_findings_slash_impression": (
        "",
        "No acute process. Stable mild cardiomegaly.",
        ["No acute process.", "Stable mild cardiomegaly."],
    ),
    "21_unknown_caps_header_ends_section": (
        "No consolidation.",
        "No pneumonia.",
        ["No consolidation.", "No pneumonia."],
    ),
    "22_paren_markers_no_periods": (
        "",
        "1) Mediastinal drain and No. 2 chest tube in place 2) No pneumothorax 3) Mild left basilar atelectasis",
        [
            "Mediastinal drain and No. 2 chest tube in place",
            "No pneumothorax",
            "Mild left basilar atelectasis",
        ],
    ),
    "23_crlf_line_endings": (
        "The lungs are clear. There is no pleural effusion.",
        "No acute process.",
        ["The lungs are clear.", "There is no pleural effusion.", "No acute process."],
    ),
    "24_final_addendum_banner": (
        "The nasogastric tube tip is in the distal esophagus. Lungs are clear.",
        "Nasogastric tube in the distal esophagus; advance by 10 cm.",
        [
            "The nasogastric tube tip is in the distal esophagus.",
            "Lungs are clear.",
            "Nasogastric tube in the distal esophagus; advance by 10 cm.",
        ],
    ),
    "25_abbreviations": (
        "Median sternotomy wires and a St. Jude mechanical valve are noted. The heart is enlarged vs. prior, "
        "approx. 1.5 cm wider. Small effusions, e.g. at the left base, are present. Lines, i.e. the right "
        "PICC, are unchanged.",
        "Increased cardiomegaly. Findings were discussed with Dr. ___ at 9:15 a.m. on ___.",
        [
            "Median sternotomy wires and a St. Jude mechanical valve are noted.",
            "The heart is enlarged vs. prior, approx. 1.5 cm wider.",
            "Small effusions, e.g. at the left base, are present.",
            "Lines, i.e. the right PICC, are unchanged.",
            "Increased cardiomegaly.",
            "Findings were discussed with Dr. ___ at 9:15 a.m. on ___.",
        ],
    ),
    "26_question_marks": (
        "Patchy opacity at the right base. Aspiration? Pneumonia? Clinical correlation is advised.",
        "Right basilar opacity, ? early pneumonia.",
        [
            "Patchy opacity at the right base.",
            "Aspiration?",
            "Pneumonia?",
            "Clinical correlation is advised.",
            "Right basilar opacity, ? early pneumonia.",
        ],
    ),
    "27_text_on_next_line_two_blank_lines": (
        "Stable 2.3 cm calcified granuloma in the left upper lobe. Otherwise the lungs are clear. Heart size "
        "normal.",
        "No acute findings. Stable granuloma.",
        [
            "Stable 2.3 cm calcified granuloma in the left upper lobe.",
            "Otherwise the lungs are clear.",
            "Heart size normal.",
            "No acute findings.",
            "Stable granuloma.",
        ],
    ),
    "28_pfi_at_top": (
        "Right lower lobe consolidation. No effusion.",
        "Right lower lobe pneumonia.",
        ["Right lower lobe consolidation.", "No effusion.", "Right lower lobe pneumonia."],
    ),
    "29_numbered_items_with_decimals_inline": (
        "",
        "1. Right upper lobe mass measures 4.5 x 3.2 cm, previously 4.1 x 3.0 cm. 2. Left pleural effusion "
        "measuring 2 cm. There is no pneumothorax. 3. Stable cardiomegaly.",
        [
            "Right upper lobe mass measures 4.5 x 3.2 cm, previously 4.1 x 3.0 cm.",
            "Left pleural effusion measuring 2 cm.",
            "There is no pneumothorax.",
            "Stable cardiomegaly.",
        ],
    ),
    # the wet read above the banner has its own IMPRESSION; the final report's sections win
    "31_wet_read_with_impression": (
        "There is a tiny left apical pneumothorax, measuring 0.8 cm. The left chest tube has been removed. "
        "The right lung is clear.",
        "Tiny left apical pneumothorax after chest tube removal.",
        [
            "There is a tiny left apical pneumothorax, measuring 0.8 cm.",
            "The left chest tube has been removed.",
            "The right lung is clear.",
            "Tiny left apical pneumothorax after chest tube removal.",
        ],
    ),
    "30_reason_for_exam_header_block": (
        "Moderate left pleural effusion, increased. Mild pulmonary edema.",
        "Increased left pleural effusion.",
        [
            "Moderate left pleural effusion, increased.",
            "Mild pulmonary edema.",
            "Increased left pleural effusion.",
        ],
    ),
}


def _read(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as f:  # keep CRLF as written
        return f.read()


def test_every_sample_has_an_expectation():
    stems = sorted(p.stem for p in SAMPLES.glob("*.txt"))
    assert stems == sorted(EXPECTED)
    assert len(stems) >= 25


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_mimic_style_samples(stem: str):
    findings, impression, sentences = EXPECTED[stem]
    sections = parse_report(_read(SAMPLES / f"{stem}.txt"))
    assert sections == ReportSections(findings=findings, impression=impression)
    assert report_sentences(sections) == sentences


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_other_sections_never_leak(stem: str):
    """No text of INDICATION, COMPARISON, NOTIFICATION, WET READ, ... reaches findings or impression."""
    leaks = (
        "INDICATION", "COMPARISON", "EXAMINATION", "NOTIFICATION", "RECOMMENDATION", "WET READ", "FINAL",
        "ADDENDUM", "Upon further review", "personally reviewed", "eval for effusion", "Chest CT is",
        "cancelled", "Possible", "Chest PA and lateral", "telephone", "10:48", "3:12",
    )  # fmt: skip
    sections = parse_report(_read(SAMPLES / f"{stem}.txt"))
    for text in (sections.findings, sections.impression):
        assert not any(leak in text for leak in leaks), text


def test_line_endings_do_not_matter():
    text = _read(SAMPLES / "01_standard_pa_lat.txt")
    assert (
        parse_report(text.replace("\n", "\r\n"))
        == parse_report(text)
        == parse_report(text.replace("\n", "\r"))
    )


def test_missing_sections_and_empty_input():
    assert parse_report("") == ReportSections("", "")
    assert parse_report("   \n \n") == ReportSections("", "")
    assert parse_report(BANNER + " INDICATION:  Cough.\n") == ReportSections("", "")
    assert report_sentences(ReportSections("", "")) == []


def test_header_text_on_same_or_next_line_is_the_same():
    same = BANNER + " FINDINGS:  Lungs are clear.  No effusion.\n \n IMPRESSION:  Normal.\n"
    nxt = BANNER + " FINDINGS:\n \n Lungs are clear.  No effusion.\n \n IMPRESSION: \n \n Normal.\n"
    assert (
        parse_report(same) == parse_report(nxt) == ReportSections("Lungs are clear. No effusion.", "Normal.")
    )


@pytest.mark.parametrize("header", ["FINDINGS", "Findings", "findings"])
@pytest.mark.parametrize("impression", ["IMPRESSION", "Impression", "impression", "CONCLUSION", "Conclusion"])
def test_header_case_variants(header: str, impression: str):
    text = f"{BANNER} INDICATION:  Cough.\n \n {header}:  Clear lungs.\n \n {impression}:  Normal.\n"
    assert parse_report(text) == ReportSections("Clear lungs.", "Normal.")


def test_wrapped_lines_and_deidentification_marks():
    text = (
        BANNER + " FINDINGS: \n \n Compared to the study of ___, there is a new 2.5 cm opacity in the\n"
        "    right lower lobe.   Dr. ___   was\n notified.\n"
    )
    expected = "Compared to the study of ___, there is a new 2.5 cm opacity in the right lower lobe. Dr. ___ was notified."
    assert parse_report(text).findings == expected


def test_findings_and_impression_are_never_both_filled_from_one_section():
    for header in (
        "FINDINGS AND IMPRESSION",
        "Findings and impression",
        "FINDINGS/IMPRESSION",
        "IMPRESSION/FINDINGS",
    ):
        sections = parse_report(f"{BANNER} {header}:  Clear lungs.  Normal heart.\n")
        assert sections == ReportSections("", "Clear lungs. Normal heart.")
        assert report_sentences(sections) == ["Clear lungs.", "Normal heart."]


def test_notification_and_recommendation_end_the_impression():
    text = (
        BANNER + " IMPRESSION:  Small left effusion.\n"
        " Recommendation(s):  Follow-up radiograph.\n"
        " Notification:  Discussed with Dr. ___.\n"
    )
    assert parse_report(text) == ReportSections("", "Small left effusion.")
    inline = BANNER + " IMPRESSION:  Small left effusion. NOTIFICATION: Discussed with Dr. ___.\n"
    assert parse_report(inline) == ReportSections("", "Small left effusion.")


def test_mixed_case_unknown_line_is_text_but_caps_unknown_header_ends_section():
    mixed = BANNER + " FINDINGS:\n Frontal and lateral views of the chest:\n Clear lungs.\n"
    assert parse_report(mixed).findings == "Frontal and lateral views of the chest: Clear lungs."
    caps = BANNER + " IMPRESSION:  Clear lungs.\n CRITICAL RESULT:  Called to Dr. ___.\n"
    assert parse_report(caps).impression == "Clear lungs."


def test_short_caps_abbreviations_and_device_names_at_line_start_are_text():
    text = BANNER + " FINDINGS:\n NG TUBE: tip in the stomach.\n SVC: no clot.\n IMPRESSION:  Normal.\n"
    assert parse_report(text) == ReportSections("NG TUBE: tip in the stomach. SVC: no clot.", "Normal.")


def test_wet_read_impression_is_kept_when_there_is_no_final_section():
    text = " WET READ: ___ 3:12 AM\n  No pneumothorax.\n" + BANNER + " IMPRESSION:  Normal.\n"
    assert parse_report(text) == ReportSections("", "Normal.")
    only_prelim = " IMPRESSION:  No pneumothorax.\n" + BANNER + " INDICATION:  Line.\n"
    assert parse_report(only_prelim) == ReportSections("", "No pneumothorax.")


@pytest.mark.parametrize(
    "header",
    [
        "CHEST, TWO VIEWS",
        "PA AND LATERAL VIEWS OF THE CHEST",
        "PORTABLE AP CHEST RADIOGRAPH",
        "SINGLE AP PORTABLE SEMI-UPRIGHT VIEW OF THE CHEST",
        "PA AND LATERAL CHEST, ___",
        "FRONTAL AND LATERAL CHEST RADIOGRAPHS",
    ],
)
def test_caps_view_headers_open_findings(header: str):
    text = f"{BANNER} INDICATION:  Cough.\n \n {header}:  Lungs are clear.\n \n IMPRESSION:  Normal.\n"
    assert parse_report(text) == ReportSections("Lungs are clear.", "Normal.")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("IMPRESSSION", ReportSections("", "Text.")),
        ("IMPRESSOIN", ReportSections("", "Text.")),
        ("FIDNINGS", ReportSections("Text.", "")),
        ("FINDING", ReportSections("Text.", "")),
        ("DEPRESSION", ReportSections("", "")),  # unknown caps header: ends sections, opens none
        ("COMPRESSION FRACTURES", ReportSections("", "")),
    ],
)
def test_misspelled_headers(header: str, expected: ReportSections):
    assert parse_report(f"{BANNER} INDICATION:  Cough.\n {header}:  Text.\n") == expected


def test_multiple_findings_sections_are_joined_in_order():
    text = (
        BANNER
        + " CHEST, PA AND LATERAL:  Clear lungs.\n \n FINDINGS:  Normal heart.\n \n IMPRESSION:  Normal.\n"
    )
    assert parse_report(text) == ReportSections("Clear lungs. Normal heart.", "Normal.")


# ---------------------------------------------------------------------------------------------
# split_sentences
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("", []),
        ("  \n\t ", []),
        ("No pleural effusion.", ["No pleural effusion."]),
        ("No pleural effusion. No pneumothorax.", ["No pleural effusion.", "No pneumothorax."]),
        (
            "Findings were discussed with Dr. ___ at 9:15 a.m. on ___.",
            ["Findings were discussed with Dr. ___ at 9:15 a.m. on ___."],
        ),
        ("Drs. ___ and ___ were paged. Mr. ___ agreed.", ["Drs. ___ and ___ were paged.", "Mr. ___ agreed."]),
        (
            "Ms. ___ was informed at 8:30 a.m. The tube was advanced.",
            ["Ms. ___ was informed at 8:30 a.m.", "The tube was advanced."],
        ),
        ("Opacity, approx. 3 cm. Stable.", ["Opacity, approx. 3 cm.", "Stable."]),
        ("Worse vs. prior. Atelectasis vs. pneumonia.", ["Worse vs. prior.", "Atelectasis vs. pneumonia."]),
        ("Devices, e.g. PICC, i.e. lines. Stable.", ["Devices, e.g. PICC, i.e. lines.", "Stable."]),
        ("St. Jude valve. Intact.", ["St. Jude valve.", "Intact."]),
        (
            "No. 2 chest tube is in place. No pneumothorax.",
            ["No. 2 chest tube is in place.", "No pneumothorax."],
        ),
        ("A 4.5 cm mass. A 0.5 cm nodule.", ["A 4.5 cm mass.", "A 0.5 cm nodule."]),
        ("Nodule measuring 2 cm. There is no effusion.", ["Nodule measuring 2 cm.", "There is no effusion."]),
        ("Views are AP. PA views were not obtained.", ["Views are AP.", "PA views were not obtained."]),
        ("Marker labeled L. The lungs are clear.", ["Marker labeled L.", "The lungs are clear."]),
        ("1. No acute process. 2. Stable cardiomegaly.", ["No acute process.", "Stable cardiomegaly."]),
        (
            "1. Line in place 2. No pneumothorax 3. Small effusion",
            ["Line in place", "No pneumothorax", "Small effusion"],
        ),
        ("1) Line in place. 2) No pneumothorax.", ["Line in place.", "No pneumothorax."]),
        ("2. 4.5 cm mass. 3. No effusion.", ["4.5 cm mass.", "No effusion."]),
        ("Pneumonia? No. Aspiration!", ["Pneumonia?", "No.", "Aspiration!"]),
        ("Evaluate for ? pneumonia. Clear.", ["Evaluate for ? pneumonia.", "Clear."]),
        (
            "Opacity (series 3, image 2) unchanged. Clear.",
            ["Opacity (series 3, image 2) unchanged.", "Clear."],
        ),
        ('He said "no change." The tube is new.', ['He said "no change."', "The tube is new."]),
        ("Compared to ___. ___ tube is new.", ["Compared to ___.", "___ tube is new."]),
        ("Stable.. New effusion.", ["Stable..", "New effusion."]),
        ("Heart normal. lungs clear.", ["Heart normal. lungs clear."]),
        (
            "AT 8:30 A.M. ON ___ DR. ___ WAS PAGED. NO CHANGE.",
            ["AT 8:30 A.M. ON ___ DR. ___ WAS PAGED.", "NO CHANGE."],
        ),
    ],
)
def test_split_sentences(text: str, sentences: list[str]):
    assert split_sentences(text) == sentences


def test_decimals_survive_wherever_they_are():
    rng = random.Random(0)
    words = ["Mass", "measures", "cm.", "There", "is", "a", "nodule", "1.", "2.", "Dr.", "___", "No.", "vs."]
    for _ in range(300):
        tokens = [
            rng.choice(words) if rng.random() < 0.7 else f"{rng.randint(0, 12)}.{rng.randint(0, 9)}"
            for _ in range(25)
        ]
        text = " ".join(tokens)
        decimals = re.findall(r"\d+\.\d+", text)
        sentences = split_sentences(text)
        assert [d for s in sentences for d in re.findall(r"\d+\.\d+", s)] == decimals


def test_report_sentences_puts_findings_first():
    sections = ReportSections(findings="A is b. C is d.", impression="1. E. 2. F.")
    assert report_sentences(sections) == ["A is b.", "C is d.", "E.", "F."]


# ---------------------------------------------------------------------------------------------
# Real report text: Indiana University chest X-ray reports shipped with torchxrayvision
# ---------------------------------------------------------------------------------------------

_MARKER = re.compile(r"(?<!\S)\d{1,2}[.)](?= |$)")


@lru_cache(maxsize=1)
def _iu_reports() -> list[dict[str, str]]:
    spec = importlib.util.find_spec("torchxrayvision")  # no import: it would pull in torch
    assert spec is not None and spec.submodule_search_locations
    archive = Path(spec.submodule_search_locations[0]) / "data" / "NLMCXR_reports.tgz"
    reports = []
    with tarfile.open(archive) as tf:
        for member in tf:
            if member.isfile() and member.name.endswith(".xml"):
                root = ET.fromstring(tf.extractfile(member).read())
                reports.append({a.get("Label"): (a.text or "") for a in root.iter("AbstractText")})
    return reports


def _normalise(text: str) -> str:
    return " ".join(text.split())


def test_iu_reports_sentences():
    reports = _iu_reports()
    assert len(reports) == 3955
    texts = [r[k] for r in reports for k in ("FINDINGS", "IMPRESSION") if r.get(k, "").strip()]
    n_sentences = 0
    for text in texts:
        sentences = split_sentences(text)
        n_sentences += len(sentences)
        norm = _normalise(text)
        # joining gives the input back, less list markers
        assert _normalise(_MARKER.sub("", " ".join(sentences))) == _normalise(_MARKER.sub("", norm)), text
        # a marker opening an item after a sentence end is removed
        assert not any(re.match(r"\d{1,2}[.)] ", s) for s in sentences), sentences
        # no decimal is cut
        assert [d for s in sentences for d in re.findall(r"\d+\.\d+", s)] == re.findall(r"\d+\.\d+", norm)
        # no sentence but the first starts in lower case (the first does when the radiologist wrote so)
        assert not any(s[0].islower() for s in sentences[1:]), sentences
        # where no digit, abbreviation or "?" can mislead, the count is that of ". Capital" boundaries
        if not re.search(r"\d|\?|\b(?:dr|mr|ms|mrs|st|vs|no|e\.g|i\.e|approx)\.", norm, re.IGNORECASE):
            assert len(sentences) == len(re.findall(r"[.!?]+(?= [\[\"'(]?[A-Z])", norm)) + 1, text
    assert n_sentences > 20000


def _wrap(text: str) -> str:
    """MIMIC-style: 72 columns, every line indented by one space."""
    return "\n".join(
        textwrap.wrap(
            text,
            width=72,
            initial_indent=" ",
            subsequent_indent=" ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    )


def test_iu_reports_rebuilt_as_mimic_reports_are_recovered():
    rng = random.Random(0)
    checked = 0
    for report in _iu_reports():
        findings, impression = report.get("FINDINGS", ""), report.get("IMPRESSION", "")
        if re.search(r"\b(?:FINDINGS|IMPRESSION)\s*:", findings + impression):
            continue  # one IU impression holds a whole report with its own headers
        same_line = rng.random() < 0.5

        def section(header: str, body: str, same_line: bool = same_line) -> str:
            if not body.strip():
                return ""
            wrapped = _wrap(body)
            return f" {header}  {wrapped[1:]}\n \n" if same_line else f" {header} \n \n{wrapped}\n \n"

        text = (
            BANNER
            + " EXAMINATION:  CHEST (PA AND LAT)\n \n"
            + section("INDICATION:", report.get("INDICATION", "") or "___")
            + section("COMPARISON:", report.get("COMPARISON", "") or "None.")
            + section(rng.choice(["FINDINGS:", "Findings:", "findings:"]), findings)
            + section(rng.choice(["IMPRESSION:", "Impression:", "CONCLUSION:"]), impression)
            + " NOTIFICATION:  The findings were discussed with Dr. ___ at 9:15 a.m. on\n ___ by telephone.\n"
        )
        assert parse_report(text) == ReportSections(_normalise(findings), _normalise(impression)), text
        checked += 1
    assert checked >= 3950

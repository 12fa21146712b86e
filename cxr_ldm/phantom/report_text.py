"""MIMIC-CXR style report text for a phantom study, and the CheXpert labels its sentences carry.

Each sentence is written together with the labels a CheXpert-style labeler would read from it
(1.0 positive, 0.0 negated, -1.0 uncertain), so the label file agrees with the text by construction,
and the text agrees with the image because both come from the same findings dict. The layout varies
the way MIMIC does: FINDINGS + IMPRESSION, IMPRESSION only, "FINDINGS AND IMPRESSION:", "CONCLUSION:",
numbered impressions, inline or separate-line section text, "___" de-identification marks, lines
wrapped at about 78 columns with a leading space.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

import numpy as np

from cxr_ldm.data.mimic import CHEXPERT_COLUMNS
from cxr_ldm.phantom.schema import DEVICE_ETT, DEVICE_LINE, DEVICE_NG, DEVICE_PACEMAKER

__all__ = ["write_report"]

BANNER = " " * 33 + "FINAL REPORT"

Labels = dict[str, float]
Statement = tuple[str, Labels]

_SEVERITY = {1: "small", 2: "moderate", 3: "large"}
_HEART = {1: ("mild", "mildly"), 2: ("moderate", "moderately"), 3: ("severe", "markedly")}
_RIGHT_LOBES = ("right upper lobe", "right middle lobe", "right lower lobe")
_LEFT_LOBES = ("left upper lobe", "lingula of the left lung", "left lower lobe")
_NODULE_ZONES = ("upper", "mid", "lower")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# Positive statements, one per finding
# ---------------------------------------------------------------------------------------------


def _effusion(findings: dict[str, int], rng: np.random.Generator) -> Statement | None:
    right, left = findings["pleural_effusion_right"], findings["pleural_effusion_left"]
    if not (right or left):
        return None
    lab = {"Pleural Effusion": 1.0}
    if right and left:
        if right == left:
            text = _pick(rng, (f"{_SEVERITY[right]} bilateral pleural effusions.",
                               f"there are {_SEVERITY[right]} bilateral pleural effusions, right and left."))  # fmt: skip
        else:
            text = (f"bilateral pleural effusions, {_SEVERITY[right]} on the right and "
                    f"{_SEVERITY[left]} on the left.")  # fmt: skip
        return _cap(text), lab
    side, sev = ("right", right) if right else ("left", left)
    text = _pick(
        rng,
        (
            f"{_SEVERITY[sev]} {side} pleural effusion.",
            f"there is a {_SEVERITY[sev]} {side} pleural effusion.",
            f"{_SEVERITY[sev]} {side}-sided pleural effusion is present.",
            f"a {_SEVERITY[sev]} {side} pleural effusion with a meniscus along the lateral chest wall.",
        ),
    )
    if sev == 1 and rng.random() < 0.4:
        text = f"blunting of the {side} costophrenic angle reflects a small {side} pleural effusion."
    return _cap(text), lab


def _pneumothorax(findings: dict[str, int], rng: np.random.Generator) -> Statement | None:
    right, left = findings["pneumothorax_right"], findings["pneumothorax_left"]
    if not (right or left):
        return None
    lab = {"Pneumothorax": 1.0}
    if right and left:
        return (
            f"Bilateral pneumothoraces, {_SEVERITY[right]} on the right and {_SEVERITY[left]} on the left.",
            lab,
        )
    side, sev = ("right", right) if right else ("left", left)
    where = "apical " if sev == 1 else ""
    text = _pick(
        rng,
        (
            f"there is a {_SEVERITY[sev]} {side} {where}pneumothorax.",
            f"{_SEVERITY[sev]} {side} {where}pneumothorax with a visible visceral pleural line.",
            f"a {_SEVERITY[sev]} {side}-sided pneumothorax is present.",
        ),
    )
    return _cap(text), lab


def _heart(findings: dict[str, int], rng: np.random.Generator) -> Statement:
    sev = findings["cardiomegaly"]
    if sev:
        adj, adv = _HEART[min(sev, 3)]
        text = _pick(
            rng,
            (
                f"{adj} cardiomegaly.",
                f"there is {adj} cardiomegaly.",
                f"the heart is {adv} enlarged (cardiomegaly).",
                f"{adj} enlargement of the cardiac silhouette, consistent with cardiomegaly.",
            ),
        )
        return _cap(text), {"Cardiomegaly": 1.0}
    options: tuple[Statement, ...] = (
        ("Heart size is normal.", {"Cardiomegaly": 0.0}),
        ("The heart is normal in size.", {"Cardiomegaly": 0.0}),
        ("The cardiomediastinal silhouette is within normal limits.", {"Enlarged Cardiomediastinum": 0.0}),
        ("Normal cardiomediastinal and hilar contours.", {"Enlarged Cardiomediastinum": 0.0}),
        ("Heart size and mediastinal contours are normal.",
         {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0}),
    )  # fmt: skip
    return options[int(rng.integers(len(options)))]


def _nodule(findings: dict[str, int], rng: np.random.Generator) -> Statement | None:
    sev = findings["nodule"]
    if not sev:
        return None
    side = "right" if findings["nodule_side"] == 0 else "left"
    zone = _NODULE_ZONES[findings["nodule_zone"]]
    lab = {"Lung Lesion": 1.0}
    if sev == 1:
        mm = int(rng.integers(6, 10))
        text = _pick(rng, (f"a small {mm} mm nodule projects over the {side} {zone} lung.",
                           f"small {side} {zone} lung nodule measuring {mm} mm."))  # fmt: skip
    elif sev == 2:
        cm = f"{rng.uniform(1.2, 2.6):.1f}"
        text = _pick(rng, (f"a {cm} cm nodule in the {side} {zone} lung zone.",
                           f"there is a {cm} cm {side} {zone} lung nodule."))  # fmt: skip
    else:
        cm = f"{rng.uniform(4.0, 6.5):.1f}"
        text = _pick(rng, (f"a {cm} cm mass in the {side} {zone} lung, concerning for malignancy.",
                           f"large {side} {zone} lung mass measuring {cm} cm."))  # fmt: skip
    return _cap(text), lab


def _consolidation(findings: dict[str, int], rng: np.random.Generator) -> Statement | None:
    right, left = findings["consolidation_right"], findings["consolidation_left"]
    if not (right or left):
        return None
    adj = {1: "patchy", 2: "", 3: "extensive"}
    places = []
    if right:
        places.append((right, _RIGHT_LOBES[findings["consolidation_right_zone"]]))
    if left:
        places.append((left, _LEFT_LOBES[findings["consolidation_left_zone"]]))
    lab = {"Consolidation": 1.0, "Lung Opacity": 1.0}
    if len(places) == 2:
        text = (f"bilateral consolidations, {adj[right] or 'moderate'} in the {places[0][1]} and "
                f"{adj[left] or 'moderate'} in the {places[1][1]}.")  # fmt: skip
    else:
        sev, lobe = places[0]
        word = f"{adj[sev]} " if adj[sev] else ""
        text = _pick(
            rng,
            (
                f"{word}consolidation in the {lobe}.",
                f"there is {word}airspace consolidation in the {lobe}.",
                f"{word}opacity with consolidation in the {lobe}.",
            ),
        )
    roll = rng.random()
    if roll < 0.35:
        text = text[:-1] + ", concerning for pneumonia."
        lab["Pneumonia"] = -1.0
    elif roll < 0.55:
        text = text[:-1] + ", compatible with pneumonia."
        lab["Pneumonia"] = 1.0
    return _cap(text), lab


def _devices(findings: dict[str, int], rng: np.random.Generator) -> list[Statement]:
    if not findings["support_devices"]:
        return []
    lab = {"Support Devices": 1.0}
    out = []
    mask = findings["devices"]
    if mask & DEVICE_ETT:
        out.append((f"Endotracheal tube terminates {rng.uniform(3.0, 5.5):.1f} cm above the carina.", lab))
    if mask & DEVICE_LINE:
        out.append((_pick(rng, ("Right internal jugular central venous catheter terminates in the mid SVC.",
                                "A right IJ line ends in the lower SVC.")), lab))  # fmt: skip
    if mask & DEVICE_PACEMAKER:
        out.append((_pick(rng, ("Left chest wall pacemaker with a single lead terminating in the right ventricle.",
                                "A left-sided pacemaker is in place, lead in the right ventricle.")), lab))  # fmt: skip
    if mask & DEVICE_NG:
        out.append((_pick(rng, ("Nasogastric tube courses below the diaphragm, tip in the stomach.",
                                "An enteric tube passes into the stomach.")), lab))  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# Negatives for absent findings
# ---------------------------------------------------------------------------------------------


def _negatives(findings: dict[str, int], rng: np.random.Generator) -> list[Statement]:
    eff = findings["pleural_effusion_right"] or findings["pleural_effusion_left"]
    ptx = findings["pneumothorax_right"] or findings["pneumothorax_left"]
    cons = findings["consolidation_right"] or findings["consolidation_left"]
    out: list[Statement] = []
    if not (eff or ptx or cons) and rng.random() < 0.5:
        out.append((
            _pick(rng, ("There is no focal consolidation, pleural effusion or pneumothorax.",
                        "No focal consolidation, pleural effusion, or pneumothorax is seen.")),
            {"Consolidation": 0.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0},
        ))  # fmt: skip
        cons = eff = ptx = 1  # already said
    if not cons and rng.random() < 0.85:
        if not (findings["nodule"] or ptx or eff) and rng.random() < 0.4:
            out.append(("The lungs are clear without focal consolidation.", {"Consolidation": 0.0}))
        elif rng.random() < 0.5:
            out.append(
                ("No focal consolidation to suggest pneumonia.", {"Consolidation": 0.0, "Pneumonia": 0.0})
            )
        else:
            out.append(("No focal consolidation.", {"Consolidation": 0.0}))
    if not eff and not ptx and rng.random() < 0.9:
        out.append((
            _pick(rng, ("There is no pleural effusion or pneumothorax.", "No pleural effusion or pneumothorax.",
                        "No pleural effusion. There is no pneumothorax.")),
            {"Pleural Effusion": 0.0, "Pneumothorax": 0.0},
        ))  # fmt: skip
    elif not eff and rng.random() < 0.9:
        out.append(
            (_pick(rng, ("No pleural effusion.", "There is no pleural effusion.")), {"Pleural Effusion": 0.0})
        )
    elif not ptx and rng.random() < 0.9:
        out.append((_pick(rng, ("No pneumothorax.", "There is no pneumothorax.")), {"Pneumothorax": 0.0}))
    if not findings["nodule"] and rng.random() < 0.15:
        out.append(("No suspicious pulmonary nodules.", {"Lung Lesion": 0.0}))
    if rng.random() < 0.35:
        out.append(("No pulmonary edema.", {"Edema": 0.0}))
    if rng.random() < 0.25:
        out.append(("No acute osseous abnormality.", {"Fracture": 0.0}))
    return out


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------


def _merge(statements: Sequence[Statement]) -> Labels:
    """Per column: positive beats uncertain beats negative; No Finding when nothing but devices is positive."""
    rank = {1.0: 3, -1.0: 2, 0.0: 1}
    out: Labels = {}
    for _, labels in statements:
        for col, val in labels.items():
            if col not in out or rank[val] > rank[out[col]]:
                out[col] = val
    pathology = [c for c in CHEXPERT_COLUMNS if c not in ("No Finding", "Support Devices")]
    if not any(out.get(c) in (1.0, -1.0) for c in pathology):
        out["No Finding"] = 1.0
    return out


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=78, initial_indent=" ", subsequent_indent=" ", break_on_hyphens=False)


def _section(name: str, body: str, rng: np.random.Generator, inline: bool | None = None) -> str:
    if inline is None:
        inline = rng.random() < 0.3
    if inline:
        return _wrap(f"{name}:  {body}")
    return f" {name}: \n \n{body if body.startswith(' ') else _wrap(body)}"


def _indication(rng: np.random.Generator, female: bool, findings: dict[str, int]) -> str:
    sex, letter = ("woman", "F") if female else ("man", "M")
    reason = _pick(rng, ("cough", "shortness of breath", "fever", "chest pain", "hypoxia", "dyspnea on exertion",
                         "weakness", "s/p fall", "pre-operative evaluation", "productive cough and fever"))  # fmt: skip
    if findings["support_devices"] and findings["devices"] & DEVICE_ETT:
        reason = "intubation"
    question = _pick(rng, ("eval for pneumonia", "evaluate for acute process", "assess for effusion",
                           "r/o infiltrate", "interval change?"))  # fmt: skip
    return _pick(rng, (f"___-year-old {sex} with {reason}.", f"___{letter} with {reason}  // {question}",
                       f"History: ___{letter} with {reason}", f"___ year old {sex} with {reason}, {question}."))  # fmt: skip


def write_report(
    findings: dict[str, int],
    rng: np.random.Generator,
    exam: str,
    technique: str,
    follow_up: bool,
    female: bool,
) -> tuple[str, Labels]:
    """Report text and its CheXpert labels (column -> 1.0 / 0.0 / -1.0; absent column = not mentioned).

    ``findings`` must hold the severities and the details (see ``complete_details``), so that the
    text names the side, lobe, size and devices the image shows.
    """
    devices = _devices(findings, rng)
    positives = [
        s
        for s in (
            _consolidation(findings, rng),
            _nodule(findings, rng),
            _effusion(findings, rng),
            _pneumothorax(findings, rng),
        )
        if s
    ]
    heart = _heart(findings, rng)
    negatives = _negatives(findings, rng)
    body = devices + positives + [heart] + negatives
    if rng.random() < 0.5:  # heart first, as many radiologists dictate
        body = devices + [heart] + positives + negatives
    findings_text = " ".join(s for s, _ in body)
    impression_items, closing = _impression_items(findings, devices, positives, heart, rng)

    layout = rng.choice(4, p=[0.7, 0.1, 0.1, 0.1])  # F+I, I only, F AND I, F+CONCLUSION
    numbered = len(impression_items) >= 2 and rng.random() < 0.4
    if layout == 1:  # IMPRESSION only: it must carry every finding itself
        impression_items = devices + positives + [heart] + negatives[:2] + closing
        numbered = False
    if numbered:  # one numbered item per line, each wrapped on its own
        impression_body = "\n".join(_wrap(f"{i}. {s}") for i, (s, _) in enumerate(impression_items, start=1))
    else:
        impression_body = " ".join(s for s, _ in impression_items)

    lower = rng.random() < 0.04
    name = (lambda s: s.capitalize()) if lower else (lambda s: s)
    sections = _header_sections(name, exam, technique, follow_up, female, findings, rng)
    used: list[Statement]
    if layout == 0:
        sections += [
            _section(name("FINDINGS"), findings_text, rng),
            _section(name("IMPRESSION"), impression_body, rng, inline=False if numbered else None),
        ]
        used = body + impression_items
    elif layout == 1:
        sections.append(_section(name("IMPRESSION"), impression_body, rng))
        used = impression_items
    elif layout == 2:  # one section: the findings, closed by "no acute process" when normal
        text = " ".join([findings_text] + [s for s, _ in closing])
        sections.append(_section(name("FINDINGS AND IMPRESSION"), text, rng))
        used = body + closing
    else:
        sections += [
            _section(name("FINDINGS"), findings_text, rng),
            _section(name("CONCLUSION"), impression_body, rng, inline=False if numbered else None),
        ]
        used = body + impression_items
    if (findings["pneumothorax_right"] or findings["pneumothorax_left"]) and rng.random() < 0.5:
        sections.append(_wrap("NOTIFICATION:  The findings were discussed with Dr. ___ by Dr. ___ on the "
                              "telephone on ___ at ___, 2 minutes after discovery."))  # fmt: skip
    text = BANNER + "\n" + "\n \n".join(sections) + "\n"
    return text, _merge(used)


def _impression_items(
    findings: dict[str, int],
    devices: list[Statement],
    positives: list[Statement],
    heart: Statement,
    rng: np.random.Generator,
) -> tuple[list[Statement], list[Statement]]:
    """The impression's statements (the positives, the heart when enlarged, sometimes the devices) and the
    "no acute process" closing of a normal study (empty otherwise); the impression is the closing when it has
    nothing else."""
    items: list[Statement] = list(positives)
    if findings["cardiomegaly"]:
        items.append(heart)
    if devices and rng.random() < 0.5:
        items.insert(0, (_pick(rng, ("Support devices as described above.", "Lines and tubes as above.")),
                         {"Support Devices": 1.0}))  # fmt: skip
    closing: list[Statement] = []
    if not positives and not findings["cardiomegaly"]:
        closing = [(_pick(rng, ("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
                                "No evidence of acute disease.", "Normal chest radiograph.")), {})]  # fmt: skip
    return items or closing, closing


def _header_sections(
    name: Callable[[str], str],
    exam: str,
    technique: str,
    follow_up: bool,
    female: bool,
    findings: dict[str, int],
    rng: np.random.Generator,
) -> list[str]:
    """EXAMINATION, INDICATION, TECHNIQUE and COMPARISON (``name`` sets the case of the headings)."""
    return [
        _section(name("EXAMINATION"), exam, rng, inline=True),
        _section(name("INDICATION"), _indication(rng, female, findings), rng, inline=True),
        _section(name("TECHNIQUE"), technique, rng, inline=True),
        _section(name("COMPARISON"), _pick(rng, ("Chest radiograph from ___.", "___", "Prior study of ___."))
                 if follow_up else _pick(rng, ("None.", "None available.", "___")), rng, inline=True),
    ]  # fmt: skip

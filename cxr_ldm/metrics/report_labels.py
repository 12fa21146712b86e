"""Report text -> finding labels: the project's one labeler (adherence, per-pathology checks, the app's prompts).

``read_findings(text)`` gives ``{column: 1 present / 0 absent / -1 uncertain}`` for the columns the text
names; a column it does not name is left out. ``named_findings`` drops the uncertain ones (what adherence
scores, as CheXpert keeps uncertain apart from 0 and 1).

Who decides what:

* **negation, uncertainty and not-current (historical, hypothetical) scope: negspacy's NegEx** (spaCy based,
  runs offline on a blank English tokenizer, no model). Three NegEx passes over the same mentions, one per
  assertion, each with its cue lists (pseudo, preceding, following, termination) from ``report_rules.yaml``.
  medspaCy's ConText was the first choice, but every medspaCy release pins ``spacy<3.8`` on Python < 3.12,
  whose thinc does not import beside numpy 2; measured in a venv of its own it also reads fewer of the
  phrasing suite's texts right (818 of 939 with its rules, 935 with ours merged in) and is slower
  (``benchmarks/medspacy_context.py``, docs/evaluation.md).
* **ours, as data** (``report_rules.yaml``): the target phrases of each column, the CXR cues NegEx's clinical
  lists lack ("resolved", "no longer seen", "removed", "interval clearing of", pseudo-cues such as "no change
  in"), statements of normal ("heart size is normal", "sharp costophrenic angles", "no acute cardiopulmonary
  process") and the side words.
* **ours, as code** (here): sentence splitting (spaCy's rule-based sentencizer), sides and aggregation.

Rules a radiologist labelling CheXpert would apply, written down:

* Lung lesion: ``nodule`` is CheXpert's Lung Lesion (a nodule or a mass; "nodular opacity" is a nodule);
  ``mass`` is also set when a mass (or tumour) is named. A granuloma, a calcified nodule or calcified node is
  healed granulomatous disease, benign, and labels nothing.
* Sides (pleural effusion, pneumothorax, consolidation): the nearest side phrase in the mention's clause;
  "bilateral", "both", "bibasilar", "right and left", "left greater than right" name both sides. A negated
  mention without a side is absent on both sides; a present or uncertain one without a side is not scored,
  unless it is plural ("small effusions", "pneumothoraces"): two pleural spaces, both sides.
* A whole report is read from its FINDINGS and IMPRESSION (:func:`reported_text`).
* Assertion of one mention: not current (history of, evaluate for) -> not labelled; else uncertain -> -1;
  else negated -> 0; else 1. A statement of normal is 0 whatever its cues.
* Across the mentions of one column (in all sentences): present beats uncertain beats absent (CheXpert).
* "No acute cardiopulmonary process" and "normal chest radiograph" mark every column of
  :data:`PATHOLOGY_COLUMNS` absent; later positive mentions still win.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

import yaml

from cxr_ldm.data.reports import parse_report
from cxr_ldm.phantom.schema import FINDING_COLUMNS

PRESENT, ABSENT, UNCERTAIN = 1, 0, -1
SIDED = ("pleural_effusion", "pneumothorax", "consolidation")
# the phantom's columns, then the other CheXpert labels a prompt can name (No Finding is what none of them is)
EXTRA_COLUMNS = (
    "mass", "atelectasis", "edema", "enlarged_cardiomediastinum", "fracture", "lung_opacity", "pneumonia",
    "pleural_other",
)  # fmt: skip
LABEL_COLUMNS: tuple[str, ...] = tuple(FINDING_COLUMNS) + EXTRA_COLUMNS
# what "no acute cardiopulmonary process" marks absent: every column but devices and bones
PATHOLOGY_COLUMNS: tuple[str, ...] = tuple(c for c in LABEL_COLUMNS if c not in ("support_devices", "fracture"))
RULES_FILE = "report_rules.yaml"
_ASSERTIONS = ("negated", "uncertain", "not_current")


@dataclass(frozen=True)
class TargetRule:
    """Phrases naming ``columns`` (concepts: a sided one stands for both its columns); ``value`` 0 = a
    statement of normal, absent whatever its cues; ``ALL`` = every column of :data:`PATHOLOGY_COLUMNS`."""

    columns: tuple[str, ...]
    pattern: re.Pattern[str]
    value: int | None = None


def _concept_columns(concept: str) -> tuple[str, ...]:
    if concept == "ALL":
        return PATHOLOGY_COLUMNS
    if concept in SIDED:
        return (f"{concept}_left", f"{concept}_right")
    return (concept,)


@lru_cache(maxsize=1)
def load_rules() -> dict[str, Any]:
    """The YAML rules shipped with the package, checked: every column named exists."""
    rules = yaml.safe_load(files("cxr_ldm.metrics").joinpath(RULES_FILE).read_text(encoding="utf-8"))
    known = set(LABEL_COLUMNS) | set(SIDED) | {"ALL"}
    for rule in rules["targets"]:
        unknown = [c for c in rule["columns"] if c not in known]
        if unknown:
            raise ValueError(f"{RULES_FILE}: unknown column(s) {unknown} in target rule {rule['patterns'][0]!r}")
    return rules


@lru_cache(maxsize=1)
def _targets() -> tuple[TargetRule, ...]:
    out = []
    for rule in load_rules()["targets"]:
        for pattern in rule["patterns"]:
            out.append(TargetRule(tuple(rule["columns"]), re.compile(pattern), rule.get("value")))
    return tuple(out)


@lru_cache(maxsize=1)
def _sides() -> dict[str, re.Pattern[str]]:
    sides = load_rules()["sides"]
    return {
        "both": re.compile("|".join(f"(?:{p})" for p in sides["both"])),
        "left": re.compile("|".join(f"(?:{p})" for p in sides["left"])),
        "right": re.compile("|".join(f"(?:{p})" for p in sides["right"])),
        "stop": re.compile(sides["stop"]),
        "after_lead": re.compile(sides["after_lead"]),
        "after_free": re.compile(sides["after_free"]),
        "plural_both": re.compile(sides["plural_both"]),
    }


@lru_cache(maxsize=1)
def pipeline():
    """The spaCy pipeline, built once per process: blank English tokenizer, sentencizer, our target matcher
    (sets ``doc.ents``) and one negspacy NegEx pass per assertion (``span._.negated`` / ``uncertain`` /
    ``not_current``)."""
    import negspacy.negation  # noqa: F401  (registers the "negex" factory)
    import spacy
    from spacy.language import Language

    if "cxr_targets" not in Language.factories:
        Language.component("cxr_targets", func=_set_targets)
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("cxr_targets")
    context = load_rules()["context"]
    for name in _ASSERTIONS:
        cues = {
            "pseudo_negations": [str(c) for c in context[name]["pseudo"]],
            "preceding_negations": [str(c) for c in context[name]["preceding"]],
            "following_negations": [str(c) for c in context[name]["following"]],
            "termination": [str(c) for c in context[name]["termination"]],
        }
        nlp.add_pipe("negex", name=f"negex_{name}", config={"neg_termset": cues, "extension_name": name})
    return nlp


def _set_targets(doc):
    """spaCy component: every target match as an entity labelled by its rule's index; longest wins."""
    from spacy.util import filter_spans

    text = doc.text.lower()
    spans = []
    for index, rule in enumerate(_targets()):
        for match in rule.pattern.finditer(text):
            start, end = match.span("m") if "m" in rule.pattern.groupindex else match.span()
            span = doc.char_span(start, end, label=str(index), alignment_mode="expand")
            if span is not None and len(span):
                spans.append(span)
    doc.ents = filter_spans(spans)
    return doc


def _side_of(sentence: str, start: int, end: int, before_from: int, after_to: int) -> tuple[str, ...]:
    """Sides of the mention at ``[start, end)`` of ``sentence``: the nearest side phrase between the
    previous mention (``before_from``) and the next (``after_to``), within the mention's clause; after the
    mention only side phrases that follow a preposition ("on the right") or name both sides in their own
    words ("bilaterally", "right greater than left")."""
    sides = _sides()
    before, after = sentence[before_from:start], sentence[end:after_to]
    if stops := list(sides["stop"].finditer(before)):
        before = before[stops[-1].end() :]
    if stop := sides["stop"].search(after):
        after = after[: stop.start()]
    best: tuple[int, tuple[str, ...]] | None = None
    for name, found in (("both", ("left", "right")), ("left", ("left",)), ("right", ("right",))):
        if sides[name].search(sentence[start:end]):  # inside the mention: "blunting of the right ... angle"
            best = (-1, found) if best is None or len(found) > len(best[1]) else best
        for m in sides[name].finditer(before):
            if before_from and sides["after_lead"].search(before[: m.start()]):
                continue  # "effusion on the right and pneumothorax": the previous mention's side
            distance = len(before) - m.end()
            if best is None or distance < best[0] or (distance == best[0] and len(found) > len(best[1])):
                best = (distance, found)
        for m in sides[name].finditer(after):
            lead = sides["after_lead"].search(after[: m.start()])
            if not (lead or sides["after_free"].match(after, m.start())):
                continue
            distance = lead.start() if lead else m.start()
            if best is None or distance < best[0] or (distance == best[0] and len(found) > len(best[1])):
                best = (distance, found)
    return best[1] if best else ()


def _mentions(doc) -> Iterable[tuple[TargetRule, int, tuple[str, ...]]]:
    """(rule, value, sides) of every mention in ``doc``."""
    rules = _targets()
    for sent in doc.sents:
        ents = list(sent.ents)
        text = sent.text.lower()
        offset = sent.start_char
        for k, ent in enumerate(ents):
            rule = rules[int(ent.label_)]
            if not rule.columns or ent._.not_current:
                continue
            if rule.value is not None:
                value = rule.value
            elif ent._.uncertain:
                value = UNCERTAIN
            elif ent._.negated:
                value = ABSENT
            else:
                value = PRESENT
            sides: tuple[str, ...] = ()
            if any(c in SIDED for c in rule.columns):
                before_from = ents[k - 1].end_char - offset if k else 0
                after_to = ents[k + 1].start_char - offset if k + 1 < len(ents) else len(text)
                sides = _side_of(text, ent.start_char - offset, ent.end_char - offset, before_from, after_to)
                if not sides and value != ABSENT:  # "right lower lobe opacity may represent consolidation"
                    sides = _side_of(text, ent.start_char - offset, ent.end_char - offset, 0, len(text))
                if not sides and value != ABSENT and _sides()["plural_both"].search(ent.text.lower()):
                    sides = ("left", "right")
            yield rule, value, sides


def _labels_of_doc(doc) -> dict[str, int]:
    rank = {PRESENT: 3, UNCERTAIN: 2, ABSENT: 1}
    out: dict[str, int] = {}

    def put(columns: Iterable[str], value: int) -> None:
        for column in columns:
            if column not in out or rank[value] > rank[out[column]]:
                out[column] = value

    for rule, value, sides in _mentions(doc):
        for concept in rule.columns:
            if concept == "ALL":
                if value == ABSENT:
                    put(PATHOLOGY_COLUMNS, ABSENT)
            elif concept not in SIDED:
                put(_concept_columns(concept), value)
            elif sides:
                put([f"{concept}_{side}" for side in sides], value)
            elif value == ABSENT:
                put(_concept_columns(concept), ABSENT)
    return {c: out[c] for c in LABEL_COLUMNS if c in out}


def reported_text(text: str) -> str:
    """What is labelled: a whole report's FINDINGS and IMPRESSION sections when it has them (its INDICATION,
    HISTORY or COMPARISON say what was asked or seen before, not what this image shows); otherwise the text."""
    text = text.strip()
    if ":" not in text and "\n" not in text:  # a sentence or a prompt: no section headers
        return text
    sections = parse_report(text)
    if sections.findings or sections.impression:
        return f"{sections.findings} {sections.impression}".strip()
    return text


@lru_cache(maxsize=65536)
def _read_cached(text: str) -> tuple[tuple[str, int], ...]:
    return tuple(_labels_of_doc(pipeline()(reported_text(text))).items())


def read_findings(text: str) -> dict[str, int]:
    """``{column: 1 present / 0 absent / -1 uncertain}`` for the columns ``text`` (a sentence, a prompt or a
    whole report, see :func:`reported_text`) names, in :data:`LABEL_COLUMNS` order."""
    if not isinstance(text, str):
        raise TypeError(f"report text must be a string, got {type(text).__name__}")
    return dict(_read_cached(text))


def named_findings(text: str) -> dict[str, int]:
    """``{column: 1 present / 0 absent}``: :func:`read_findings` without the uncertain mentions."""
    return {column: value for column, value in read_findings(text).items() if value != UNCERTAIN}


def label_texts(texts: Sequence[str], batch_size: int = 256) -> list[dict[str, int]]:
    """:func:`read_findings` of many texts, through spaCy's batched ``pipe`` (no cache)."""
    nlp = pipeline()
    return [_labels_of_doc(doc) for doc in nlp.pipe((reported_text(t) for t in texts), batch_size=batch_size)]

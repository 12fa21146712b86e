"""Prompt adherence: which findings a prompt names (present, absent or uncertain), and whether the image shows them.

:func:`read_findings` reads report-style text into phantom finding columns: ``1`` named present, ``0`` named
absent, ``-1`` named with uncertainty ("possible", "cannot be excluded", ...); findings the text does not
mention are left out. :func:`named_findings` keeps the present and absent ones, which is what adherence
scores (uncertain mentions are kept apart, as CheXpert's labeler keeps them apart from its 0 and 1).

The rules follow NegEx and the CheXpert labeler:

* a negation cue ("no", "without", "negative for", ...) negates the mentions that follow it in its clause, and
  post-negations ("is not seen", "has resolved") the mention before them. A clause ends at ``;``, ``:``, the
  end of the sentence and at "but", "however", "although", "though", "except", "aside from", "whereas",
  "while", "which", "with"; a comma or "and" ends it too unless what follows continues a list of negated
  findings ("No focal consolidation, pleural effusion or pneumothorax is seen."): a segment that starts a new
  statement (a verb, "there", an article, a size or severity word) is not part of the list;
* pseudo-negations negate nothing: "no change in", "no interval change", "without interval change",
  "not significantly changed", "no increase in", ... ("No change in mild cardiomegaly." names it present);
* uncertainty cues ("possible", "may", "suspicious for", "cannot be excluded", "versus", ...) make a mention
  uncertain, never absent;
* "No acute cardiopulmonary process." and its variants mark every pathology absent; "heart size is normal" and
  "sharp costophrenic angles" mark cardiomegaly / the effusions absent;
* a sided finding takes the side word nearest to it in its clause ("bilateral", "both", "bibasilar",
  "right and left" = both), a negated one without a side is absent on both sides, and a present one without a
  side is not scored;
* across mentions of one column: present beats uncertain beats absent.

It reads the phantom generator's sentences exactly (tested against its ground truth) and a large set of
MIMIC-style phrasings (``tests/metrics/test_adherence_phrasings.py``).

Two judges implement :class:`AdherenceJudge`: the phantom classifier (every column of
``FINDING_COLUMNS``, sides apart) and a torchxrayvision pathology classifier for MIMIC (side-free
concepts; the real-image reference uses the CheXpert labels of the prepared split).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from cxr_ldm.metrics.auroc import auroc
from cxr_ldm.phantom.schema import FINDING_COLUMNS

PATHOLOGY_COLUMNS = tuple(c for c in FINDING_COLUMNS if c != "support_devices")
SIDED = ("pleural_effusion", "pneumothorax", "consolidation")
PRESENT, ABSENT, UNCERTAIN = 1, 0, -1

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# clause boundaries: strong ones always end a negation's scope, weak ones (comma, "and") unless a list goes on
_BOUNDARY = re.compile(
    r"(?P<strong>\s*[;:]\s*|\s*\(\s*|\s*\)\s*|,?\s*\b(?:but|however|although|though|except|aside from|apart from"
    r"|whereas|while|which|with|yet|otherwise)\b)"
    r"|(?P<weak>\s*,\s*(?:and\b|or\b)?|\s+and\b)"
)
# "right and left", "right greater than left": both sides
_BOTH_SIDES = re.compile(
    r"\b(?:right|left)(?:-sided)?\s+(?:and|greater than|more than|larger than|worse than|>|<)\s+"
    r"(?:[a-z]+\s+)?(?:left|right)\b"
)
_PSEUDO_NEGATION = re.compile(
    r"\bno\s+(?:significant\s+|substantial\s+|appreciable\s+|major\s+|definite\s+)?(?:interval\s+)?"
    r"(?:change|changes|increase|decrease|worsening|improvement|progression|difference)\b"
    r"|\bwithout\s+(?:significant\s+|substantial\s+|appreciable\s+)?(?:interval\s+)?"
    r"(?:change|changes|increase|decrease|worsening|improvement|progression)\b"
    r"|\bnot\s+(?:been\s+)?(?:significantly\s+|substantially\s+|appreciably\s+|much\s+|markedly\s+|"
    r"definitely\s+|clearly\s+)?(?:changed|increased|decreased|improved|worsened|progressed|different)\b"
    r"|\bnot\s+only\b|\bno\s+doubt\b|\bgram[- ]negative\b"
)
_UNCERTAINTY = re.compile(
    r"\b(?:can\s?not|could\s+not|may\s+not|not)\s+(?:be\s+)?(?:entirely\s+|completely\s+|totally\s+)?"
    r"(?:excluded|exclude|ruled\s+out|rule\s+out)\b"
    r"|\b(?:cannot|can't)\s+(?:exclude|rule\s+out)\b"
    r"|\b(?:possible|possibly|probable|probably|likely|presumed|presumably|may|might|could|questionable"
    r"|question\s+of|suspicious\s+for|suspected|suspect|concerning\s+for|concern\s+for|worrisome\s+for"
    r"|suggestive\s+of|suggesting|suggests?|equivocal|indeterminate|versus|vs|differential|"
    r"rule\s+out|r/o|not\s+certain|uncertain)\b|\?"
)
_NEGATION = re.compile(
    r"\b(?:no|not|without|negative\s+for|free\s+of|absence\s+of|resolution\s+of|resolved|rather\s+than"
    r"|removal\s+of|removed|clear\s+of|ruled\s+out|never|nor)\b"
)
_POST_NEGATION = re.compile(
    r"\b(?:(?:is|are|was|were)\s+)?(?:not|no\s+longer)\s+(?:\w+\s+)?"
    r"(?:seen|present|identified|visualized|appreciated|demonstrated|evident|detected|noted|visible|apparent)"
    r"|\b(?:has|have)\s+(?:\w+\s+)?(?:resolved|cleared|been\s+removed)|\bresolved\b|\babsent\b|\bremoved\b"
)
# words that start a new statement: after a comma or "and" they end a negated list
_NEW_STATEMENT = re.compile(
    r"\b(?:is|are|was|were|be|been|has|have|had|there|appears?|remains?|seems?|shows?|demonstrates?"
    r"|persists?|persistent|a|an|the|this|small|moderate|large|mild|mildly|severe|marked|trace|tiny|minimal"
    r"|extensive|massive|moderately|new|stable|unchanged|increasing|increased|decreasing|decreased|worsening"
    r"|improving|known|residual|loculated|layering|enlarged|enlarging)\b"
)
# what may follow the last item of a negated list: "... or pneumothorax is seen"
_LIST_PREDICATE = re.compile(
    r"^\s*(?:(?:or|nor|and)\s+[a-z ]*?)?(?:(?:is|are|was|were)\s+(?:\w+\s+)?"
    r"(?:seen|present|identified|visualized|appreciated|demonstrated|evident|detected|noted|visible|apparent)"
    r"(?:\s+(?:on|in)\s+[a-z ]*)?|(?:on|in)\s+(?:this|the)\s+(?:study|exam|examination|radiograph|image)\w*)?"
    r"\s*$"
)
_GLOBAL_NORMAL = re.compile(
    r"no acute cardiopulmonary|normal chest radiograph|no evidence of acute|no acute intrathoracic"
    r"|no acute (?:process|abnormality|disease|findings?)|no radiographic evidence of acute"
    r"|no (?:acute )?(?:radiographic|radiologic) (?:findings|abnormality)|normal (?:chest )?x-ray"
)
_HEART_NOUN = r"(?:heart|cardiac\s+(?:silhouette|size|shadow|contours?))(?:\s+size)?"
_HEART_LINK = (
    r"(?:\s+(?:is|are|was|appears?|remains?|seems?|looks?|now|again|still|also|not|no|longer|overall"
    r"|slightly|mildly|moderately|severely|markedly|massively|substantially|significantly|minimally|somewhat"
    r"|borderline|top-normal|top|normal|stably|persistently|at|least|to|possibly|probably|likely|unchanged"
    r"|in|size|be|may|might|grossly|very|quite|only|enlarged\s+and))*"
)
_HEART_ENLARGED = r"(?:enlarged|large|enlargement|increased|prominent)"
_CONCEPTS: dict[str, re.Pattern[str]] = {
    "cardiomegaly": re.compile(
        r"cardiomegaly|\bcardiac\s+enlargement|\bcardiomegalic"
        rf"|\b{_HEART_NOUN}{_HEART_LINK}\s+{_HEART_ENLARGED}\b"
        r"|\b(?:enlarged|large|increased|enlargement\s+of)\s+(?:the\s+)?"
        r"(?:heart|cardiac\s+(?:silhouette|size|shadow|contour))"
    ),
    "pleural_effusion": re.compile(
        r"pleural\s+effusions?|(?<!pericardial )\beffusions?\b|\bpleural\s+fluid|hydrothorax"
        r"|\bblunt(?:ing|ed)\s+(?:of\s+)?(?:the\s+)?(?:\w+\s+){0,2}costophrenic\s+(?:angles?|sulc[a-z]+)"
        r"|\bcostophrenic\s+(?:angles?|sulc[a-z]+)\s+(?:is\s+|are\s+|remains?\s+)?(?:\w+\s+)?blunted"
    ),
    "pneumothorax": re.compile(r"pneumothora(?:x|ces)|\bptx\b"),
    "nodule": re.compile(
        r"\bnodules?\b|\bnodular\s+(?:opacity|opacities|density|densities)|\bmass(?:es)?\b(?!\s+effect)"
        r"|\blung\s+lesions?\b"
    ),
    "consolidation": re.compile(r"consolidat(?:ion|ions|ive)\b"),
    "support_devices": re.compile(
        r"endotracheal|enteric\s+tube|nasogastric|\bng\s?tube|\bog\s?tube|catheter|\bij\s+line|\bpicc\b"
        r"|pacemaker|\bpacer\b|defibrillator|\bicd\b|swan[- ]ganz|port-a-cath|\bcentral\s+(?:venous\s+)?line"
        r"|support\s+devices|lines\s+and\s+tubes|\btube\b|\btubes\b|\bdrain\b"
    ),
}
# statements of normal that name a finding absent without a negation word
_NORMAL_MENTIONS: dict[str, re.Pattern[str]] = {
    "cardiomegaly": re.compile(
        r"\b(?:heart|cardiac|cardiomediastinal)\b[^.;]{0,60}"
        r"\b(?:normal|within\s+normal\s+limits|unremarkable|top[- ]normal|upper\s+limits?\s+of\s+normal)\b"
        r"|\bnormal\s+(?:heart|cardiac|cardiomediastinal)"
    ),
    "pleural_effusion": re.compile(
        r"\b(?:sharp|clear|normal|preserved)\s+(?:\w+\s+)?costophrenic\s+(?:angles?|sulc[a-z]+)"
        r"|\bcostophrenic\s+(?:angles?|sulc[a-z]+)\s+(?:are|is|remains?)\s+(?:\w+\s+)?"
        r"(?:sharp|clear|normal|preserved)"
    ),
}
_SIDE = re.compile(r"\bbilateral(?:ly)?\b|\bboth\b|\bbibasilar\b|\bbibasal\b|\bright\b|\bleft\b|\blingula(?:r)?\b")


def _columns(concept: str, sides: Iterable[str]) -> list[str]:
    if concept not in SIDED:
        return [concept]
    return [f"{concept}_{side}" for side in sides]


def _sides(clause: str, position: int) -> list[str]:
    """Sides for a mention at ``position`` in ``clause``: "bilateral" anywhere, else the nearest side word."""
    words = list(_SIDE.finditer(clause))
    if any(w.group(0).startswith(("bilateral", "both", "bibas")) for w in words):
        return ["left", "right"]
    if not words:
        return []
    nearest = min(words, key=lambda w: abs(w.start() - position))
    return ["left"] if nearest.group(0).startswith(("left", "lingula")) else ["right"]


def _mention_sides(segment: _Segment, position: int) -> list[str]:
    """Sides of the mention at ``position``: side words between the negation cues around it count
    ("right pleural effusion without pneumothorax": the pneumothorax has no side)."""
    start, end = 0, len(segment.text)
    for cue in _NEGATION.finditer(segment.masked):
        if cue.start() <= position:
            start = cue.start()
        else:
            end = cue.start()
            break
    return _sides(segment.text[start:end], position - start)


@dataclass
class _Segment:
    """A piece of a sentence between clause boundaries; ``weak`` = the boundary before it was a comma/"and"."""

    text: str  # as written (lower case)
    masked: str  # the same with pseudo-negations and uncertainty phrases blanked, for negation cues
    weak: bool
    negates_forward: bool = False  # a negation in (or carried into) it reaches into a following list item


def _blank(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def _segments(sentence: str) -> list[_Segment]:
    pieces: list[tuple[str, bool]] = []
    position, weak = 0, False
    for m in _BOUNDARY.finditer(sentence):
        pieces.append((sentence[position : m.start()], weak))
        position, weak = m.end(), m.group("weak") is not None
    pieces.append((sentence[position:], weak))
    out = []
    for text, weak in pieces:
        masked = _blank(_blank(text, _PSEUDO_NEGATION), _UNCERTAINTY)
        out.append(_Segment(text, masked, weak))
    return out


def _is_list_item(segment: _Segment, start: int, end: int) -> bool:
    """A comma/"and" segment that only continues a list of findings (nothing new said before or after)."""
    before, after = segment.text[:start], segment.text[end:]
    if _NEW_STATEMENT.search(_blank(before, _PSEUDO_NEGATION)):
        return False
    # later mentions of the same list are part of it too: "pleural effusion or pneumothorax is seen"
    for pattern in _CONCEPTS.values():
        after = pattern.sub(" ", after)
    return bool(_LIST_PREDICATE.match(re.sub(r"\b(?:or|nor|and|focal|definite|acute|significant)\b", " ", after)))


def _status(segments: list[_Segment], i: int, start: int, end: int) -> int:
    segment = segments[i]
    upto, after = segment.masked[:end], segment.masked[end:]
    if _NEGATION.search(upto) or _POST_NEGATION.search(after):
        return ABSENT
    if segment.weak and i > 0 and segments[i - 1].negates_forward and _is_list_item(segment, start, end):
        return ABSENT
    if _UNCERTAINTY.search(segment.text[:end]) or _UNCERTAINTY.search(segment.text[end:].split(" and ")[0]):
        return UNCERTAIN
    return PRESENT


def read_findings(text: str) -> dict[str, int]:
    """``{finding column: 1 present / 0 absent / -1 uncertain}`` for the findings ``text`` names."""
    rank = {PRESENT: 3, UNCERTAIN: 2, ABSENT: 1}
    out: dict[str, int] = {}

    def put(columns: Iterable[str], value: int) -> None:
        for column in columns:
            if column not in out or rank[value] > rank[out[column]]:
                out[column] = value

    for raw in _SENTENCE.split(text.strip()):
        sentence = _BOTH_SIDES.sub("bilateral", raw.strip().lower()).rstrip(".!? ")
        if not sentence:
            continue
        if _GLOBAL_NORMAL.search(sentence):
            put(PATHOLOGY_COLUMNS, ABSENT)
        segments = _segments(sentence)
        for i, segment in enumerate(segments):
            found_mention = False
            for concept, pattern in _CONCEPTS.items():
                for mention in pattern.finditer(segment.text):
                    found_mention = True
                    status = _status(segments, i, mention.start(), mention.end())
                    if status == ABSENT and _NEGATION.search(segment.masked[: mention.start()] or ""):
                        segment.negates_forward = True
                    elif status == ABSENT and segment.weak and i and segments[i - 1].negates_forward:
                        segment.negates_forward = True
                    sides = _mention_sides(segment, mention.start()) if concept in SIDED else []
                    if status == ABSENT:
                        put(_columns(concept, sides or ["left", "right"]), ABSENT)
                    elif concept not in SIDED or sides:
                        put(_columns(concept, sides), status)
            for concept, pattern in _NORMAL_MENTIONS.items():
                mention = pattern.search(segment.text)
                if mention and not _CONCEPTS[concept].search(segment.text):
                    sides = _sides(segment.text, mention.start()) if concept in SIDED else []
                    put(_columns(concept, sides or ["left", "right"]), ABSENT)
            if not found_mention and _NEGATION.search(segment.masked):
                segment.negates_forward = True  # "no evidence of focal consolidation," ... "or effusion"
    return out


def named_findings(text: str) -> dict[str, int]:
    """``{finding column: 1 present / 0 absent}``: :func:`read_findings` without the uncertain mentions."""
    return {column: value for column, value in read_findings(text).items() if value != UNCERTAIN}


# ------------------------------------------------------------------------------------------------- scoring
class AdherenceJudge(Protocol):
    """What adherence needs from a classifier: its concepts, prompt -> expectations, images -> scores."""

    name: str
    concepts: tuple[str, ...]

    def expected(self, prompt: str) -> dict[str, int]: ...

    def scores(self, images: torch.Tensor) -> torch.Tensor: ...  # [B, len(concepts)] in 0..1, 0.5 = decision


def _summarise(per: dict[str, dict]) -> dict:
    acc = [v["accuracy"] for v in per.values() if v["accuracy"] is not None]
    auc = [v["auroc"] for v in per.values() if v["auroc"] is not None]
    return {
        "mean_accuracy": float(np.mean(acc)) if acc else None,
        "mean_auroc": float(np.mean(auc)) if auc else None,
        "per_finding": per,
    }


def score_against_labels(concepts: Sequence[str], scores: np.ndarray, labels: np.ndarray) -> dict:
    """Per concept accuracy (threshold 0.5) and AUROC of ``scores`` ``[N, C]`` against ``labels`` ``[N, C]``
    (1 present, 0 absent, NaN unknown = not scored); means over the concepts that could be scored."""
    per: dict[str, dict] = {}
    for j, concept in enumerate(concepts):
        known = ~np.isnan(labels[:, j])
        y, s = labels[known, j], scores[known, j]
        per[concept] = {
            "n_present": int((y == 1).sum()),
            "n_absent": int((y == 0).sum()),
            "accuracy": float(((s > 0.5) == (y == 1)).mean()) if len(y) else None,
            "auroc": auroc(s, y),
        }
    return _summarise(per)


def expected_matrix(judge: AdherenceJudge, prompts: Sequence[str]) -> np.ndarray:
    """``[N, C]`` expectations of ``prompts`` (NaN where a prompt does not name the concept)."""
    out = np.full((len(prompts), len(judge.concepts)), np.nan)
    for i, prompt in enumerate(prompts):
        for concept, value in judge.expected(prompt).items():
            if concept in judge.concepts:
                out[i, judge.concepts.index(concept)] = value
    return out


# ------------------------------------------------------------------------------------------------- judges
class PhantomJudge:
    """The phantom CNN: one concept per phantom finding column."""

    concepts = tuple(FINDING_COLUMNS)

    def __init__(self, classifier) -> None:  # a phantom_classifier.PhantomClassifier
        self.classifier = classifier
        self.name = f"phantom CNN ({classifier.settings.image_size} px, trained on rendered phantom images)"

    def expected(self, prompt: str) -> dict[str, int]:
        return named_findings(prompt)

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.predict(images)

    @staticmethod
    def labels_from_truth(truth) -> np.ndarray:  # phantom severities -> presence
        return (truth[list(FINDING_COLUMNS)].to_numpy(dtype=float) > 0).astype(float)


def load_phantom_judge(
    image_size: int,
    options: dict[str, Any] | None = None,
    raw_size: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[PhantomJudge, dict[str, Any]]:
    """The phantom judge at ``image_size``, its classifier read from ``cache_dir/classifiers`` or trained there.

    The one set-up of the evaluation's adherence and the FID callback. ``options`` are
    ``PhantomClassifierSettings`` fields; without ``options["raw_size"]`` the classifier renders at ``raw_size``
    (the phantom tree's JPEG size), as the phantom data were rendered. Returns the judge and what
    ``metrics.json`` records about it: settings, whether it came from the cache, its validation AUROCs.
    """
    from dataclasses import asdict

    from cxr_ldm.metrics.phantom_classifier import PhantomClassifierSettings, load_or_train_phantom_classifier

    options = dict(options or {})
    if options.get("raw_size") is None:
        options["raw_size"] = raw_size
    settings = PhantomClassifierSettings(image_size=image_size, **options)
    cache = Path(cache_dir).expanduser() / "classifiers" if cache_dir else None
    classifier, cached = load_or_train_phantom_classifier(settings, cache, progress)
    validation = classifier.info["validation"]
    aurocs = [v["auroc"] for v in validation.values() if v["auroc"] == v["auroc"]]
    return PhantomJudge(classifier), {
        "classifier_settings": asdict(settings), "classifier_cached": cached,
        "classifier_validation_mean_auroc": float(np.mean(aurocs)) if aurocs else None,
        "classifier_validation": validation,
    }  # fmt: skip


# concept -> torchxrayvision targets (max over them) and the prepared CheXpert label column
XRV_CONCEPTS: dict[str, tuple[tuple[str, ...], str]] = {
    "cardiomegaly": (("Cardiomegaly",), "chexpert_cardiomegaly"),
    "pleural_effusion": (("Effusion",), "chexpert_pleural_effusion"),
    "pneumothorax": (("Pneumothorax",), "chexpert_pneumothorax"),
    "consolidation": (("Consolidation",), "chexpert_consolidation"),
    "nodule": (("Nodule", "Mass"), "chexpert_lung_lesion"),
}


def side_free(named: dict[str, int]) -> dict[str, int]:
    """Side-free concepts: present if either side is named present, absent if both are named absent."""
    out: dict[str, int] = {}
    for concept in XRV_CONCEPTS:
        if concept in SIDED:
            values = [named.get(f"{concept}_{s}") for s in ("left", "right")]
            if 1 in values:
                out[concept] = 1
            elif values == [0, 0]:
                out[concept] = 0
        elif concept in named:
            out[concept] = named[concept]
    return out


class XRVJudge:
    """torchxrayvision's DenseNet pathology outputs (operating-point calibrated), side-free concepts."""

    concepts = tuple(XRV_CONCEPTS)

    def __init__(self, extractor) -> None:  # a features.XRVFeatureExtractor
        self.extractor = extractor
        targets = extractor.targets
        missing = [t for ts, _ in XRV_CONCEPTS.values() for t in ts if t not in targets]
        if missing:
            raise ValueError(f"the torchxrayvision model has no output(s) {missing}; its targets: {targets}")
        self.index = [[targets.index(t) for t in ts] for ts, _ in XRV_CONCEPTS.values()]
        self.name = f"torchxrayvision DenseNet-121 ({extractor.weights_label})"

    def expected(self, prompt: str) -> dict[str, int]:
        return side_free(named_findings(prompt))

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        out = self.extractor.classify(images).float().cpu()
        return torch.stack([out[:, idx].max(dim=1).values for idx in self.index], dim=1)

    @staticmethod
    def labels_from_chexpert(chexpert) -> np.ndarray:
        """1 / 0 from CheXpert positive / negative; uncertain (-1) and blank are not scored."""
        cols = []
        for _, column in XRV_CONCEPTS.values():
            values = (
                chexpert[column].to_numpy(dtype=float)
                if column in chexpert
                else np.full(len(chexpert), np.nan)
            )
            cols.append(np.where(np.isin(values, (0.0, 1.0)), values, np.nan))
        return np.stack(cols, axis=1)

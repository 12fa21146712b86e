"""Prompt adherence: which findings a prompt names (present or absent), and whether the image shows them.

:func:`named_findings` reads report-style text into phantom finding columns (``1`` named present, ``0``
named absent; findings the text does not mention are not scored). It is a small rule set in the spirit of
NegEx: a finding mentioned after a negation cue ("no", "without", ...) in its sentence, or followed by
"is not seen" / "has resolved", is absent; "No acute cardiopulmonary process." and its variants mark every
pathology absent; a sided finding takes the side word nearest to it in its clause ("bilateral" = both), and a
sided finding named present without a side is not scored. It covers the phantom generator's sentences
exactly (tested against its ground truth) and common MIMIC phrasing approximately.

Two judges implement :class:`AdherenceJudge`: the phantom classifier (every column of
``FINDING_COLUMNS``, sides apart) and a torchxrayvision pathology classifier for MIMIC (side-free
concepts; the real-image reference uses the CheXpert labels of the prepared split).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import torch

from cxr_ldm.data.phantom import FINDING_COLUMNS

PATHOLOGY_COLUMNS = tuple(c for c in FINDING_COLUMNS if c != "support_devices")
SIDED = ("pleural_effusion", "pneumothorax", "consolidation")

_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")
_CLAUSE = re.compile(r"[,;:]|\s+(?:and|but|with|while)\s+")
_NEGATION = re.compile(
    r"\b(?:no|not|without|negative for|free of|absence of|resolution of|resolved|rather than|removed)\b"
)
_POST_NEGATION = re.compile(
    r"\b(?:(?:is|are|was|were)\s+)?(?:not|no longer)\s+"
    r"(?:seen|present|identified|visualized|appreciated|demonstrated)"
    r"|\b(?:has|have)\s+resolved|\bresolved\b|\babsent\b|\bremoved\b"
)
_GLOBAL_NORMAL = re.compile(
    r"no acute cardiopulmonary|normal chest radiograph|no evidence of acute|no acute intrathoracic"
    r"|no acute (?:process|abnormality|disease)|no radiographic evidence of acute"
)
_HEART_NORMAL = re.compile(
    r"\b(?:heart|cardiac|cardiomediastinal)\b[^.]{0,60}"
    r"\b(?:normal|within normal limits|unremarkable|top[- ]normal)\b"
    r"|\bnormal (?:heart|cardiac|cardiomediastinal)"
)
_CONCEPTS: dict[str, re.Pattern[str]] = {
    "cardiomegaly": re.compile(
        r"cardiomegaly|heart is (?:\w+ )?enlarged|enlarged heart|enlarge(?:d|ment of the) cardiac silhouette"
    ),
    "pleural_effusion": re.compile(r"pleural effusions?|\beffusions?\b|costophrenic angle"),
    "pneumothorax": re.compile(r"pneumothora(?:x|ces)"),
    "nodule": re.compile(r"\bnodules?\b|\bmass\b"),
    "consolidation": re.compile(r"consolidations?\b"),
    "support_devices": re.compile(
        r"endotracheal|enteric tube|nasogastric|\bng tube|catheter|\bij line|\bpicc\b|pacemaker|"
        r"support devices|lines and tubes|\btube\b"
    ),
}
_SIDE = re.compile(r"\bbilateral(?:ly)?\b|\bboth\b|\bright\b|\bleft\b|\blingula\b")


def _columns(concept: str, sides: Iterable[str]) -> list[str]:
    if concept not in SIDED:
        return [concept]
    prefix = "pleural_effusion" if concept == "pleural_effusion" else concept
    return [f"{prefix}_{side}" for side in sides]


def _sides(clause: str, position: int) -> list[str]:
    """Sides for a mention at ``position`` in ``clause``: "bilateral" anywhere, else the nearest side word."""
    words = list(_SIDE.finditer(clause))
    if any(w.group(0).startswith(("bilateral", "both")) for w in words):
        return ["left", "right"]
    if not words:
        return []
    nearest = min(words, key=lambda w: abs(w.start() - position))
    return ["left"] if nearest.group(0) in ("left", "lingula") else ["right"]


def _clause_bounds(sentence: str, position: int) -> tuple[int, int]:
    start, end = 0, len(sentence)
    for m in _CLAUSE.finditer(sentence):
        if m.end() <= position:
            start = m.end()
        elif m.start() >= position:
            end = m.start()
            break
    return start, end


def named_findings(text: str) -> dict[str, int]:
    """``{finding column: 1 present / 0 absent}`` for the findings ``text`` names (module docstring)."""
    present: dict[str, int] = {}
    absent: dict[str, int] = {}
    for raw in _SENTENCE.split(text.strip()):
        sentence = raw.strip().lower()
        if not sentence:
            continue
        if _GLOBAL_NORMAL.search(sentence):
            absent.update(dict.fromkeys(PATHOLOGY_COLUMNS, 0))
        if _HEART_NORMAL.search(sentence) and not _CONCEPTS["cardiomegaly"].search(sentence):
            absent["cardiomegaly"] = 0
        cue = _NEGATION.search(sentence)
        negated_from = cue.start() if cue else len(sentence)
        for concept, pattern in _CONCEPTS.items():
            for mention in pattern.finditer(sentence):
                a, b = _clause_bounds(sentence, mention.start())
                clause = sentence[a:b]
                after = sentence[mention.end() : b]
                negated = mention.start() > negated_from or bool(_POST_NEGATION.search(after))
                sides = _sides(clause, mention.start() - a) if concept in SIDED else []
                if negated:
                    for column in _columns(concept, sides or ["left", "right"]):
                        absent[column] = 0
                elif concept not in SIDED or sides:
                    for column in _columns(concept, sides):
                        present[column] = 1
    return {**absent, **present}


# ------------------------------------------------------------------------------------------------- scoring
class AdherenceJudge(Protocol):
    """What adherence needs from a classifier: its concepts, prompt -> expectations, images -> scores."""

    name: str
    concepts: tuple[str, ...]

    def expected(self, prompt: str) -> dict[str, int]: ...

    def scores(self, images: torch.Tensor) -> torch.Tensor: ...  # [B, len(concepts)] in 0..1, 0.5 = decision


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    from torchmetrics.functional.classification import binary_auroc

    if len(labels) == 0 or labels.min() == labels.max():
        return None
    return float(binary_auroc(torch.as_tensor(scores, dtype=torch.float32), torch.as_tensor(labels).long()))


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
            "auroc": _auroc(s, y),
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

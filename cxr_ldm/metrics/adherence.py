"""Prompt adherence: which findings a prompt names (present, absent or uncertain), and whether the image shows them.

What a prompt names is read by the project's one report labeler, :mod:`cxr_ldm.metrics.report_labels`
(negspacy's NegEx for negation, uncertainty and not-current scope; our target phrases and CXR rules as data):
:func:`read_findings` gives ``1`` named present, ``0`` named absent, ``-1`` named with uncertainty;
:func:`named_findings` keeps the present and absent ones, which is what adherence scores (uncertain mentions
are kept apart, as CheXpert's labeler keeps them apart from its 0 and 1).

Two judges implement :class:`AdherenceJudge`: the phantom classifier (every column of
``FINDING_COLUMNS``, sides apart) and a torchxrayvision pathology classifier for MIMIC (side-free
concepts; the real-image reference uses the CheXpert labels of the prepared split).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from cxr_ldm.metrics.auroc import auroc
from cxr_ldm.metrics.report_labels import (  # noqa: F401  (re-exported: adherence's prompt reading)
    ABSENT,
    PATHOLOGY_COLUMNS,
    PRESENT,
    SIDED,
    UNCERTAIN,
    named_findings,
    read_findings,
)
from cxr_ldm.phantom.schema import FINDING_COLUMNS


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

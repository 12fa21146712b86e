"""The measures ``metrics=[...]`` can name: for each, its function and what it needs.

``needs`` drives the option checks (:class:`cxr_ldm.evaluation.inputs.Inputs`): generated, real or training
images, the generated images' prompts, a stage-1 autoencoder, CheXpert labels. ``networks`` names the feature
networks it runs (given the checked inputs, since some depend on options), which the runner loads before any
sampling. Adding a measure is one function in :mod:`cxr_ldm.evaluation.measures` and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cxr_ldm.evaluation import measures
from cxr_ldm.evaluation.inputs import (
    AUTOENCODER,
    GENERATED,
    LABELS,
    PROMPTS,
    REAL,
    TRAIN,
    EvaluationError,
    option,
)

if TYPE_CHECKING:
    from cxr_ldm.evaluation.context import Context
    from cxr_ldm.evaluation.inputs import Inputs


def _fixed(*kinds: str) -> Callable[[Inputs], tuple[str, ...]]:
    return lambda inputs: kinds


def _fid_networks(inputs: Inputs) -> tuple[str, ...]:
    return ("xrv", "inception") if bool(option(inputs.cfg, "fid.inception")) else ("xrv",)


def _adherence_networks(inputs: Inputs) -> tuple[str, ...]:
    return ("xrv",) if inputs.judge_kind == "xrv" else ()


PRDC_FEATURES = ("raddino", "xrv")


def _prdc_networks(inputs: Inputs) -> tuple[str, ...]:
    kinds = option(inputs.cfg, "prdc.features")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    if not kinds or any(k not in PRDC_FEATURES for k in kinds):
        raise EvaluationError(f"prdc.features must list some of {', '.join(PRDC_FEATURES)}; got {kinds}")
    return tuple(kinds)


@dataclass(frozen=True)
class Measure:
    name: str
    compute: Callable[[Context], dict[str, Any]]
    needs: frozenset[str]
    networks: Callable[[Inputs], tuple[str, ...]] = _fixed()
    summary: str = ""


MEASURES: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure("recon", measures.recon, frozenset({REAL, AUTOENCODER}),
                summary="MS-SSIM / PSNR of stage-1 reconstructions"),
        Measure("diversity", measures.diversity, frozenset({GENERATED, REAL}),
                summary="mean pairwise MS-SSIM, generated vs real"),
        Measure("fid", measures.fid, frozenset({GENERATED, REAL}), _fid_networks,
                summary="FID on torchxrayvision DenseNet features (+ Inception-v3)"),
        Measure("kid", measures.kid, frozenset({GENERATED, REAL}), _fixed("xrv"),
                summary="KID on torchxrayvision DenseNet features"),
        Measure("adherence", measures.adherence, frozenset({GENERATED, PROMPTS}), _adherence_networks,
                summary="findings named by the prompt, read off the image by a classifier"),
        Measure("memorization", measures.memorization, frozenset({GENERATED, REAL, TRAIN}), _fixed("xrv"),
                summary="nearest training image by DenseNet features, vs real test images"),
        # CheXGenBench's measures (docs/evaluation.md)
        Measure("fid_raddino", measures.fid_raddino, frozenset({GENERATED, REAL}), _fixed("raddino"),
                summary="FID on RAD-DINO features (CheXGenBench's leaderboard)"),
        Measure("kid_raddino", measures.kid_raddino, frozenset({GENERATED, REAL}), _fixed("raddino"),
                summary="KID on RAD-DINO features"),
        Measure("prdc", measures.prdc, frozenset({GENERATED, REAL}), _prdc_networks,
                summary="precision, recall, density, coverage (k = 5) on RAD-DINO and DenseNet features"),
        Measure("alignment", measures.alignment, frozenset({GENERATED, PROMPTS}), _fixed("alignment"),
                summary="BioViL-T image-prompt cosine"),
        Measure("reid", measures.reid, frozenset({GENERATED, TRAIN}), _fixed("reid"),
                summary="patient re-identification probability against the training images"),
        Measure("per_pathology", measures.per_pathology, frozenset({GENERATED, REAL, PROMPTS, LABELS}),
                _fixed("xrv"), summary="FID and adherence per CheXpert label"),
    )
}  # fmt: skip


def networks_for(names: Iterable[str], inputs: Inputs) -> set[str]:
    """Every network kind the measures ``names`` run."""
    return {kind for name in names for kind in MEASURES[name].networks(inputs)}

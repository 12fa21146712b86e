"""The tables of ``report.md``: one row per measure beside CheXGenBench's and the seed model's published
figures, the CheXGenBench leaderboard, per pathology, and each measure's protocol."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL

SEED_PUBLISHED_SOURCE = "the reference model's publication (DESIGN.md, 'published figures')"
CHEXGENBENCH_SOURCE = (
    "CheXGenBench leaderboard (README of https://github.com/Raman1121/CheXGenBench; Dutt et al., "
    "arXiv 2505.10496): FID on RAD-DINO features, MIMIC-CXR test prompts, lower is better"
)
# (model, parameters, FID on RAD-DINO features), as ranked in CheXGenBench's README
CHEXGENBENCH_FID_RADDINO: tuple[tuple[str, str, float], ...] = (
    ("Sana", "0.60B", 54.23),
    ("Pixart Sigma", "0.60B", 60.15),
    ("RadEdit", "0.86B", 69.70),
    ("LLM-CXR", "12B", 71.24),
    ("SD V3.5 Medium", "2.50B", 91.30),
    ("Lumina 2.0", "2.60B", 101.20),
    ("SD V1-5", "0.86B", 118.93),
    ("Flux.1-Dev", "12B", 122.40),
    ("SD V1-4", "0.86B", 125.19),
    ("SD V2-1", "0.86B", 186.53),
    ("SD V2", "0.86B", 194.72),
)
_CGB_RANGE = (
    f"{CHEXGENBENCH_FID_RADDINO[0][2]:.2f} ({CHEXGENBENCH_FID_RADDINO[0][0]}, best) to "
    f"{CHEXGENBENCH_FID_RADDINO[-1][2]:.2f} ({CHEXGENBENCH_FID_RADDINO[-1][0]}); SD V2-1 186.53"
)
_CGB_PAPER = "per model in arXiv 2505.10496 (not transcribed here)"
RANDOM_FLAG = "RANDOM weights: plumbing only"


@dataclass(frozen=True)
class Row:
    """One line of the metrics table; ``value`` is printed with ``digits`` decimals."""

    metric: str
    value: float | None
    digits: int
    details: str = ""
    chexgenbench: str = ""
    published: str = ""

    @property
    def value_text(self) -> str:
        return "n/a" if self.value is None else f"{self.value:.{self.digits}f}"


def lookup(mapping: Mapping[str, Any] | None, *keys: str) -> Any:
    cur: Any = mapping
    for key in keys:
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


def from_random_weights(m: Mapping[str, Any]) -> bool:
    """Whether a metric's numbers came from random weights (any label the measures write)."""
    labels = [m.get("xrv_weights"), lookup(m, "protocol", "weights"), m.get("weights")]
    return RANDOM_WEIGHTS_LABEL in [x for x in labels if isinstance(x, str)]


def _flag(m: Mapping[str, Any], text: str = "") -> str:
    return "; ".join(t for t in (text, RANDOM_FLAG if from_random_weights(m) else "") if t)


def _prdc_sets(prdc: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """``prdc`` is one result (the four names at top level) or one result per feature set."""
    if "precision" in prdc:
        return [(str(prdc.get("features", "")), prdc)]
    return [(name, v) for name, v in prdc.items() if isinstance(v, Mapping) and "precision" in v]


def metric_rows(metrics: Mapping[str, Any]) -> list[Row]:
    """The table's rows for the measures present in ``metrics`` (one number per row)."""
    rows: list[Row] = []
    if m := metrics.get("recon"):
        n = f"n={m.get('n')}"
        rows.append(Row("AE reconstruction MS-SSIM", m.get("ms_ssim"), 4, _flag(m, n), "", "0.9789 (5,000 images)"))
        rows.append(Row("AE reconstruction PSNR (dB)", m.get("psnr"), 2, _flag(m, n)))
    if m := metrics.get("diversity"):
        n = f"{lookup(m, 'generated', 'n_images')} images"
        rows.append(Row("diversity: mean pairwise MS-SSIM, generated", lookup(m, "generated", "mean"), 4,
                        _flag(m, n), "", "0.4083"))  # fmt: skip
        if lookup(m, "real", "mean") is not None:
            rows.append(Row("diversity: mean pairwise MS-SSIM, real test", lookup(m, "real", "mean"), 4, n, "", "0.4046"))
    if m := metrics.get("fid"):
        n = f"{m.get('n_real')} real vs {m.get('n_generated')} generated"
        rows.append(Row("FID, torchxrayvision DenseNet features", m.get("value"), 3, _flag(m, n), "",
                        "9.02 (other protocol: not comparable)"))  # fmt: skip
        if lookup(m, "inception", "value") is not None:
            rows.append(Row("FID, Inception-v3", lookup(m, "inception", "value"), 3, n, _CGB_PAPER))
    if m := metrics.get("kid"):
        spread = f"+- {m.get('std', float('nan')):.5f} over {m.get('subsets')} subsets of {m.get('subset_size')}"
        rows.append(Row("KID, torchxrayvision DenseNet features", m.get("mean"), 5, _flag(m, spread)))
    if m := metrics.get("fid_raddino"):
        n = f"{m.get('n_real')} real vs {m.get('n_generated')} generated"
        rows.append(Row("FID, RAD-DINO features", m.get("value"), 2, _flag(m, n), _CGB_RANGE))
    if m := metrics.get("kid_raddino"):
        spread = f"+- {m.get('std', float('nan')):.5f} over {m.get('subsets')} subsets of {m.get('subset_size')}"
        rows.append(Row("KID, RAD-DINO features", m.get("mean"), 5, _flag(m, spread), _CGB_PAPER))
    if m := metrics.get("prdc"):
        for features, result in _prdc_sets(m):
            where = f" ({features})" if features else ""
            k = f"k={result.get('nearest_k')}, {result.get('n_real')} real vs {result.get('n_fake')} generated"
            for name in ("precision", "recall", "density", "coverage"):
                first = name == "precision"
                rows.append(Row(f"{name}{where}", result.get(name), 4, _flag(result, k) if first else "",
                                _CGB_PAPER if first and "dino" in features.lower() else ""))  # fmt: skip
    if m := metrics.get("alignment"):
        rows.append(Row("alignment: BioViL-T image-prompt cosine, mean", m.get("mean"), 4,
                        _flag(m, f"std {m.get('std', float('nan')):.4f}, n={m.get('n')}"), _CGB_PAPER))  # fmt: skip
    if m := metrics.get("reid"):
        thr = m.get("threshold", 0.5)
        n = f"{m.get('n_generated')} generated vs {m.get('n_train')} training images"
        rows.append(Row("re-identification: mean of per-image max probability", m.get("mean"), 4, _flag(m, n),
                        _CGB_PAPER))  # fmt: skip
        rows.append(Row("re-identification: max probability", m.get("max"), 4))
        rows.append(Row(f"re-identification: share above {thr:g}", m.get("fraction_above_threshold"), 4))
    if m := metrics.get("memorization"):
        n = f"{m.get('n_near_copies')} of {lookup(m, 'generated_to_train', 'n')} below {m.get('threshold', 0):.3g}"
        rows.append(Row("memorization: share of near-copies", m.get("fraction_near_copies"), 4, _flag(m, n)))
    if m := metrics.get("adherence"):
        rows.append(Row("adherence: mean accuracy, generated", lookup(m, "generated", "mean_accuracy"), 3, _flag(m)))
        rows.append(Row("adherence: mean AUROC, generated", lookup(m, "generated", "mean_auroc"), 3))
        if lookup(m, "real", "mean_auroc") is not None:
            rows.append(Row("adherence: mean AUROC, real (the classifier's own)", lookup(m, "real", "mean_auroc"), 3))
    return rows


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """The metrics table (markdown): ours, CheXGenBench's figures, the seed model's published figures."""
    rows = [(r.metric, r.value_text, r.details, r.chexgenbench, r.published) for r in metric_rows(metrics)]
    return markdown_table(("metric", "ours", "details", "CheXGenBench", "published (seed model)"), rows)


def leaderboard_table(metrics: Mapping[str, Any], name: str = "this model") -> str | None:
    """CheXGenBench's FID (RAD-DINO) leaderboard with this run's value placed by rank (``None`` without it)."""
    value = lookup(metrics, "fid_raddino", "value")
    if value is None:
        return None
    entries = [(m, size, v, "") for m, size, v in CHEXGENBENCH_FID_RADDINO]
    note = RANDOM_FLAG if from_random_weights(metrics["fid_raddino"]) else "our protocol (docs/evaluation.md)"
    entries.append((f"**{name}**", "", float(value), note))
    entries.sort(key=lambda e: e[2])
    rows = [(rank, m, size, f"{v:.2f}", note) for rank, (m, size, v, note) in enumerate(entries, start=1)]
    return markdown_table(("rank", "model", "size", "FID (RAD-DINO)", "note"), rows)


def per_pathology_table(pp: Mapping[str, Any]) -> str:
    def num(v, d):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"

    rows = []
    for label, e in pp["labels"].items():
        rows.append((label, e.get("n_real"), e.get("n_generated"), num(e.get("fid"), 2),
                     num(lookup(e, "adherence", "generated", "rate"), 3), num(lookup(e, "adherence", "real", "rate"), 3),
                     num(lookup(e, "adherence", "generated", "auroc"), 3)))  # fmt: skip
    return markdown_table(("label", "real", "generated", "FID", "rate generated", "rate real", "AUROC generated"),
                          rows)  # fmt: skip


def protocol_lines(metrics: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, m in metrics.items():
        if not isinstance(m, Mapping) or name in ("samples", "settings"):  # not measures
            continue
        p = m.get("protocol")
        if isinstance(p, Mapping):
            what = p.get("feature_extractor") or p.get("model") or p.get("classifier") or p.get("measure") or name
            line = f"- `{name}`: {what}"
            if p.get("features"):  # a measure on several feature sets (prdc): each set's own protocol
                line += " on " + ", ".join(f"{f} ({lookup(m, f, 'protocol', 'weights')})" for f in p["features"])
            if p.get("weights") is not None:
                line += f"; weights `{p['weights']}`"
            sha = p.get("weights_sha256")
            sha_text = sha if isinstance(sha, str) else ", ".join(f"{k} {v}" for k, v in (sha or {}).items())
            lines.append(line + (f" (sha256 {sha_text})" if sha_text else ""))
        elif m.get("xrv_weights"):
            lines.append(f"- `{name}`: torchxrayvision DenseNet-121, weights `{m['xrv_weights']}`")
    return lines


"""``report.md`` and its figures, written from a ``metrics.json`` dict: what a person reads after ``evaluate``.

Pure functions of their inputs (a metrics dict, image paths, other runs' metrics dicts), so the runner calls
:func:`write_report` last and a sweep can be reported again later from its ``metrics.json`` files
(:func:`load_metrics`). Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no
global backend state, no display needed) at fixed sizes.

Reference figures beside ours:

- the seed model's published figures (DESIGN.md): AE MS-SSIM 0.9789 (5,000 test images), diversity 0.4083
  generated / 0.4046 real, FID 9.02 on torchxrayvision features (another protocol: not comparable, see
  docs/evaluation.md);
- CheXGenBench's leaderboard, FID on RAD-DINO features, from its README (:data:`CHEXGENBENCH_SOURCE`).
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL
from cxr_ldm.utils.atomic import atomic_write_text
from cxr_ldm.utils.figures import captioned_panels, stack_rows

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


def _get(mapping: Mapping[str, Any] | None, *keys: str) -> Any:
    cur: Any = mapping
    for key in keys:
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _random(m: Mapping[str, Any]) -> bool:
    """Whether a metric's numbers came from random weights (any label the measures write)."""
    labels = [m.get("xrv_weights"), _get(m, "protocol", "weights"), m.get("weights")]
    return RANDOM_WEIGHTS_LABEL in [x for x in labels if isinstance(x, str)]


def _flag(m: Mapping[str, Any], text: str = "") -> str:
    return "; ".join(t for t in (text, RANDOM_FLAG if _random(m) else "") if t)


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
        n = f"{_get(m, 'generated', 'n_images')} images"
        rows.append(Row("diversity: mean pairwise MS-SSIM, generated", _get(m, "generated", "mean"), 4,
                        _flag(m, n), "", "0.4083"))  # fmt: skip
        if _get(m, "real", "mean") is not None:
            rows.append(Row("diversity: mean pairwise MS-SSIM, real test", _get(m, "real", "mean"), 4, n, "", "0.4046"))
    if m := metrics.get("fid"):
        n = f"{m.get('n_real')} real vs {m.get('n_generated')} generated"
        rows.append(Row("FID, torchxrayvision DenseNet features", m.get("value"), 3, _flag(m, n), "",
                        "9.02 (other protocol: not comparable)"))  # fmt: skip
        if _get(m, "inception", "value") is not None:
            rows.append(Row("FID, Inception-v3", _get(m, "inception", "value"), 3, n, _CGB_PAPER))
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
        n = f"{m.get('n_near_copies')} of {_get(m, 'generated_to_train', 'n')} below {m.get('threshold', 0):.3g}"
        rows.append(Row("memorization: share of near-copies", m.get("fraction_near_copies"), 4, _flag(m, n)))
    if m := metrics.get("adherence"):
        rows.append(Row("adherence: mean accuracy, generated", _get(m, "generated", "mean_accuracy"), 3, _flag(m)))
        rows.append(Row("adherence: mean AUROC, generated", _get(m, "generated", "mean_auroc"), 3))
        if _get(m, "real", "mean_auroc") is not None:
            rows.append(Row("adherence: mean AUROC, real (the classifier's own)", _get(m, "real", "mean_auroc"), 3))
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
    value = _get(metrics, "fid_raddino", "value")
    if value is None:
        return None
    entries = [(m, size, v, "") for m, size, v in CHEXGENBENCH_FID_RADDINO]
    note = RANDOM_FLAG if _random(metrics["fid_raddino"]) else "our protocol (docs/evaluation.md)"
    entries.append((f"**{name}**", "", float(value), note))
    entries.sort(key=lambda e: e[2])
    rows = [(rank, m, size, f"{v:.2f}", note) for rank, (m, size, v, note) in enumerate(entries, start=1)]
    return markdown_table(("rank", "model", "size", "FID (RAD-DINO)", "note"), rows)


# ------------------------------------------------------------------------------------------------ figures
def _figure(width_in: float, height_in: float, dpi: int = 100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")  # no bbox_inches: the size stays figsize * dpi
    return path


def plot_per_pathology(per_pathology: Mapping[str, Any], path: str | Path, dpi: int = 100) -> Path:
    """Two horizontal bar charts over the 14 labels: FID (``n/a`` where too few images) and the classifier's
    positive rate on generated vs real images of positive studies. ``12 x 6`` inches at ``dpi``."""
    labels = list(per_pathology["labels"])
    entries = [per_pathology["labels"][k] for k in labels]
    y = np.arange(len(labels))
    fig = _figure(12, 6, dpi)
    ax_fid, ax_adh = fig.subplots(1, 2, sharey=True)
    fids = [e.get("fid") for e in entries]
    ax_fid.barh(y, [f if f is not None else 0.0 for f in fids], color="#4c72b0")
    top = max([f for f in fids if f is not None], default=1.0)
    for i, (f, e) in enumerate(zip(fids, entries, strict=True)):
        text = f"{f:.1f}" if f is not None else "n/a"
        ax_fid.text((f or 0.0) + 0.01 * top, i, f"{text}  (n={e.get('n_real')}/{e.get('n_generated')})",
                    va="center", fontsize=7)  # fmt: skip
    ax_fid.set_yticks(y, [textwrap.shorten(k, 26) for k in labels], fontsize=8)
    ax_fid.invert_yaxis()
    ax_fid.set_xlabel("FID (real / generated images of positive studies)")
    ax_fid.set_xlim(0, top * 1.45)
    ax_fid.set_title("FID per label (lower is better)", fontsize=10)

    def rate(e, side):
        return _get(e, "adherence", side, "rate")

    gen = [rate(e, "generated") for e in entries]
    real = [rate(e, "real") for e in entries]
    h = 0.38
    ax_adh.barh(y - h / 2, [g if g is not None else 0 for g in gen], h, label="generated", color="#dd8452")
    ax_adh.barh(y + h / 2, [r if r is not None else 0 for r in real], h, label="real (classifier's own)", color="#999999")
    for i, e in enumerate(entries):
        if e.get("adherence") is None:
            ax_adh.text(0.01, i, "no classifier output", va="center", fontsize=7, color="#666666")
    ax_adh.set_xlim(0, 1)
    ax_adh.set_xlabel("share called present by the classifier (threshold 0.5)")
    ax_adh.set_title("adherence per label (higher is better)", fontsize=10)
    ax_adh.legend(loc="lower right", fontsize=8)
    fig.subplots_adjust(left=0.17, right=0.98, top=0.93, bottom=0.1, wspace=0.08)
    return _save(fig, Path(path))


def sample_grid(rows: Sequence[tuple[str, Sequence[str | Path]]], path: str | Path, panel_size: int = 160,
                captions: Sequence[Sequence[str]] | None = None) -> Path:  # fmt: skip
    """One row per prompt: its images (e.g. one per seed) side by side, the prompt under the first panel.

    ``captions[r][c]`` replaces the text under panel ``c`` of row ``r`` (e.g. ``"seed 3"``). Width:
    ``columns * (panel_size + 6) + 6`` pixels, columns being the longest row.
    """
    if not rows:
        raise ValueError("no sample rows to draw")
    columns = max(len(images) for _, images in rows)
    figures = []
    for r, (prompt, images) in enumerate(rows):
        if not images:
            raise ValueError(f"prompt {prompt!r} has no images")
        panels = [np.asarray(Image.open(p).convert("L")) for p in images]
        panels += [np.full((8, 8), 255, np.uint8)] * (columns - len(panels))
        text = list(captions[r]) if captions is not None else [prompt] + [""] * (len(images) - 1)
        text += [""] * (columns - len(text))
        figures.append(captioned_panels(panels, text, panel_size=panel_size, chars_per_line=max(12, panel_size // 6)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stack_rows(figures).save(path)
    return path


def guidance_scale_of(metrics: Mapping[str, Any]) -> float | None:
    """The guidance scale a run sampled with (``settings.sampling.guidance_scale``, or ``samples``')."""
    for keys in (("settings", "sampling", "guidance_scale"), ("samples", "guidance_scale"),
                 ("samples", "sampling", "guidance_scale")):  # fmt: skip
        value = _get(metrics, *keys)
        if isinstance(value, int | float):
            return float(value)
    return None


def sweep_points(sweep: Sequence[Mapping[str, Any]], guidance_scales: Sequence[float] | None = None) -> list[dict]:
    """``[{"guidance_scale", "fid", "fid_features", "alignment"}]`` sorted by guidance scale: the runs of a
    guidance-scale sweep that have an alignment and a FID (RAD-DINO's when present, else torchxrayvision's)."""
    if guidance_scales is not None and len(guidance_scales) != len(sweep):
        raise ValueError(f"{len(guidance_scales)} guidance scales for {len(sweep)} runs")
    points = []
    for k, m in enumerate(sweep):
        g = guidance_scales[k] if guidance_scales is not None else guidance_scale_of(m)
        if g is None:
            raise ValueError(f"run {k} of the sweep records no guidance scale (settings.sampling.guidance_scale)")
        fid, features = _get(m, "fid_raddino", "value"), "RAD-DINO"
        if fid is None:
            fid, features = _get(m, "fid", "value"), "torchxrayvision"
        align = _get(m, "alignment", "mean")
        if fid is None or align is None:
            continue
        points.append({"guidance_scale": float(g), "fid": float(fid), "fid_features": features,
                       "alignment": float(align)})  # fmt: skip
    return sorted(points, key=lambda p: p["guidance_scale"])


def plot_guidance_sweep(points: Sequence[Mapping[str, Any]], path: str | Path, dpi: int = 100) -> Path:
    """FID against alignment, one point per guidance scale joined in order: the trade-off users tune.
    ``6 x 4.5`` inches at ``dpi``."""
    if not points:
        raise ValueError("no sweep points with both a FID and an alignment")
    fig = _figure(6, 4.5, dpi)
    ax = fig.subplots()
    x = [p["alignment"] for p in points]
    y = [p["fid"] for p in points]
    ax.plot(x, y, "-o", color="#4c72b0")
    for p in points:
        ax.annotate(f"g={p['guidance_scale']:g}", (p["alignment"], p["fid"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)  # fmt: skip
    features = {p["fid_features"] for p in points}
    ax.set_xlabel("alignment (BioViL-T cosine, mean; higher is better)")
    ax.set_ylabel(f"FID ({' / '.join(sorted(features))} features; lower is better)")
    ax.set_title("guidance scale: fidelity against alignment", fontsize=10)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.15, right=0.95, top=0.92, bottom=0.13)
    return _save(fig, Path(path))


def load_metrics(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Read ``metrics.json`` files (or folders holding one), e.g. the jobs of ``-m sampling.guidance_scale=...``."""
    out = []
    for p in paths:
        path = Path(p)
        path = path / "metrics.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: expected a metrics.json written by python -m cxr_ldm.evaluate")
        out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


# ------------------------------------------------------------------------------------------------ report
def _per_pathology_table(pp: Mapping[str, Any]) -> str:
    def num(v, d):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"

    rows = []
    for label, e in pp["labels"].items():
        rows.append((label, e.get("n_real"), e.get("n_generated"), num(e.get("fid"), 2),
                     num(_get(e, "adherence", "generated", "rate"), 3), num(_get(e, "adherence", "real", "rate"), 3),
                     num(_get(e, "adherence", "generated", "auroc"), 3)))  # fmt: skip
    return markdown_table(("label", "real", "generated", "FID", "rate generated", "rate real", "AUROC generated"),
                          rows)  # fmt: skip


def _protocols(metrics: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, m in metrics.items():
        if not isinstance(m, Mapping) or name in ("samples", "settings"):  # not measures
            continue
        p = m.get("protocol")
        if isinstance(p, Mapping):
            what = p.get("feature_extractor") or p.get("model") or p.get("classifier") or p.get("measure") or name
            line = f"- `{name}`: {what}"
            if p.get("features"):  # a measure on several feature sets (prdc): each set's own protocol
                line += " on " + ", ".join(f"{f} ({_get(m, f, 'protocol', 'weights')})" for f in p["features"])
            if p.get("weights") is not None:
                line += f"; weights `{p['weights']}`"
            sha = p.get("weights_sha256")
            sha_text = sha if isinstance(sha, str) else ", ".join(f"{k} {v}" for k, v in (sha or {}).items())
            lines.append(line + (f" (sha256 {sha_text})" if sha_text else ""))
        elif m.get("xrv_weights"):
            lines.append(f"- `{name}`: torchxrayvision DenseNet-121, weights `{m['xrv_weights']}`")
    return lines


def write_report(
    metrics: Mapping[str, Any],
    out_dir: str | Path,
    sample_rows: Sequence[tuple[str, Sequence[str | Path]]] | None = None,
    sweep: Sequence[Mapping[str, Any]] | None = None,
    guidance_scales: Sequence[float] | None = None,
    title: str = "Evaluation report",
    model_name: str = "this model",
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``out_dir/report.md`` and the figures it embeds; returns ``{"report": ..., <figure>: ...}``.

    ``sample_rows``: ``(prompt, [image files])`` per row of the sample grid (``figures/samples.png``).
    ``sweep``: the ``metrics.json`` dicts of a guidance-scale sweep (this run may be one of them) for
    ``figures/guidance_sweep.png``. Figures are only drawn for what is given / present in ``metrics``.
    ``notes``: paragraphs printed under the title (e.g. how the run was made and what its numbers can mean).
    """
    out = Path(out_dir)
    fig_dir = out / "figures"
    written: dict[str, Path] = {}
    parts = [f"# {title}", ""]
    for note in notes:
        parts += [str(note), ""]
    samples = metrics.get("samples")
    if isinstance(samples, Mapping):
        facts = [f"{k}: {samples[k]}" for k in ("n", "source", "seed", "prompts", "sampler", "steps", "guidance_scale")
                 if k in samples]  # fmt: skip
        if facts:
            parts += ["Generated images: " + "; ".join(str(f) for f in facts) + ".", ""]
    if any(_random(m) for m in metrics.values() if isinstance(m, Mapping)):
        parts += [f"**Some numbers below come from random network weights ({RANDOM_FLAG}); never report them.**", ""]
    parts += ["## Metrics", "", metrics_table(metrics), "",
              f"CheXGenBench: {CHEXGENBENCH_SOURCE}. Published (seed model): {SEED_PUBLISHED_SOURCE}. "
              "Comparability caveats for each measure: docs/evaluation.md.", ""]  # fmt: skip
    board = leaderboard_table(metrics, model_name)
    if board:
        parts += ["## CheXGenBench leaderboard (FID on RAD-DINO features)", "", board, "",
                  "CheXGenBench sampled its models with their own settings on its own test prompts (LLaVA-Rad "
                  "annotations of MIMIC-CXR); the rank is indicative, not a benchmark submission.", ""]  # fmt: skip
    pp = metrics.get("per_pathology")
    if isinstance(pp, Mapping) and pp.get("labels"):
        written["per_pathology"] = plot_per_pathology(pp, fig_dir / "per_pathology.png")
        parts += ["## Per pathology", "", "![per pathology](figures/per_pathology.png)", "", _per_pathology_table(pp), "",
                  str(pp.get("selection", "")), ""]  # fmt: skip
    if sample_rows:
        written["samples"] = sample_grid(sample_rows, fig_dir / "samples.png")
        parts += ["## Samples", "", "![samples](figures/samples.png)", ""]
    if sweep:
        points = sweep_points(sweep, guidance_scales)
        if points:
            written["guidance_sweep"] = plot_guidance_sweep(points, fig_dir / "guidance_sweep.png")
            table = markdown_table(("guidance scale", "FID", "features", "alignment"),
                                   [(f"{p['guidance_scale']:g}", f"{p['fid']:.2f}", p["fid_features"],
                                     f"{p['alignment']:.4f}") for p in points])  # fmt: skip
            parts += ["## Guidance scale: FID against alignment", "", "![guidance sweep](figures/guidance_sweep.png)",
                      "", table, ""]  # fmt: skip
    protocols = _protocols(metrics)
    if protocols:
        parts += ["## Protocols", "", *protocols, ""]
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.md"
    atomic_write_text(report, "\n".join(parts), "report", durable=False)
    written["report"] = report
    return written


def _job_key(folder: Path) -> tuple[int, str]:
    return (int(folder.name), "") if folder.name.isdigit() else (1 << 30, folder.name)


def sweep_runs(sweep_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(job folder, metrics)`` of every job of a multirun (a subfolder holding a ``metrics.json``), in job order."""
    root = Path(sweep_dir)
    folders = sorted((p.parent for p in root.glob("*/metrics.json")), key=_job_key)
    if not folders:
        raise FileNotFoundError(f"no job folder with a metrics.json in {root}: was it the out_dir of a multirun (-m)?")
    return list(zip(folders, load_metrics(folders), strict=True))


def write_sweep_report(sweep_dir: str | Path, out_dir: str | Path | None = None,
                       title: str = "Guidance-scale sweep") -> dict[str, Path]:  # fmt: skip
    """``report.md`` of a multirun's folder: one row per job (its guidance scale, FIDs, alignment, a link to
    its own report) and, when the jobs measured a FID and alignment, FID against alignment
    (``figures/guidance_sweep.png``)."""
    root = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else root
    runs = sweep_runs(root)

    def num(v: Any, d: int) -> str:
        return "n/a" if not isinstance(v, int | float) else f"{v:.{d}f}"

    rows = []
    for folder, m in runs:
        job = folder.relative_to(root) if folder.is_relative_to(root) else folder
        link = f"[{job}]({job}/report.md)" if (folder / "report.md").is_file() else str(job)
        g = guidance_scale_of(m)
        rows.append((link, "n/a" if g is None else f"{g:g}", _get(m, "settings", "sampling", "sampler") or "",
                     _get(m, "settings", "sampling", "steps") or "", num(_get(m, "fid", "value"), 3),
                     num(_get(m, "fid_raddino", "value"), 2), num(_get(m, "alignment", "mean"), 4),
                     _get(m, "samples", "n") or ""))  # fmt: skip
    parts = [f"# {title}", "", f"{len(runs)} runs of `python -m cxr_ldm.evaluate -m` in `{root}`.", "",
             markdown_table(("job", "guidance scale", "sampler", "steps", "FID (DenseNet)", "FID (RAD-DINO)",
                             "alignment", "images"), rows), ""]  # fmt: skip
    written: dict[str, Path] = {}
    metrics = [m for _, m in runs]
    if all(guidance_scale_of(m) is not None for m in metrics) and (points := sweep_points(metrics)):
        written["guidance_sweep"] = plot_guidance_sweep(points, out / "figures" / "guidance_sweep.png")
        parts += ["## FID against alignment", "", "![guidance sweep](figures/guidance_sweep.png)", ""]
    if any(_random(v) for m in metrics for v in m.values() if isinstance(v, Mapping)):
        parts += [f"**Some numbers come from random network weights ({RANDOM_FLAG}); never report them.**", ""]
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.md"
    atomic_write_text(report, "\n".join(parts), "report", durable=False)
    written["report"] = report
    return written


def grid_rows_of(folder: str | Path) -> list[tuple[str, list[Path]]]:
    """The sample-grid rows an evaluation sampled into ``folder`` (``report_samples/``): its images grouped by
    prompt, in order; ``[]`` when the folder has no ``samples.json``."""
    manifest = Path(folder) / "samples.json"
    if not manifest.is_file():
        return []
    rows: dict[str, list[Path]] = {}
    for record in json.loads(manifest.read_text(encoding="utf-8")).get("images", []):
        rows.setdefault(str(record.get("prompt", "")), []).append(Path(folder) / record["file"])
    return list(rows.items())


def rewrite_run_report(run: str | Path, out: str | Path | None = None,
                       sweep: Sequence[str | Path] | None = None) -> dict[str, Any]:  # fmt: skip
    """(Re)write the report of one evaluation run (its ``metrics.json`` or folder) with the title, notes and model
    name the evaluation used; ``sweep``: the ``metrics.json`` files (or folders) of a sweep to tabulate with it."""
    (metrics,) = load_metrics([run])
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    options = _get(metrics, "settings", "config", "report") or {}  # as the evaluation wrote it
    extra = {k: options[k] for k in ("title", "notes") if options.get(k)}
    source = _get(metrics, "samples", "model") or _get(metrics, "samples", "path")
    if options.get("model_name") or source:  # as the evaluation named it: the option, else the model's file name
        extra["model_name"] = str(options.get("model_name") or Path(str(source)).name)
    return write_report(metrics, Path(out) if out else run_dir, sample_rows=grid_rows_of(run_dir / "report_samples")
                        or None, sweep=load_metrics(sweep) if sweep else None, **extra)  # fmt: skip

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cxr_ldm.evaluation.report_figures import plot_guidance_sweep, plot_per_pathology, sample_grid
from cxr_ldm.evaluation.report_tables import (
    CHEXGENBENCH_SOURCE,
    RANDOM_FLAG,
    SEED_PUBLISHED_SOURCE,
    from_random_weights,
    leaderboard_table,
    lookup,
    markdown_table,
    metrics_table,
    per_pathology_table,
    protocol_lines,
)
from cxr_ldm.evaluation.sweep_report import load_metrics, sweep_points
from cxr_ldm.utils.atomic import atomic_write_text


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
    if any(from_random_weights(m) for m in metrics.values() if isinstance(m, Mapping)):
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
        parts += ["## Per pathology", "", "![per pathology](figures/per_pathology.png)", "", per_pathology_table(pp), "",
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
    protocols = protocol_lines(metrics)
    if protocols:
        parts += ["## Protocols", "", *protocols, ""]
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
    options = lookup(metrics, "settings", "config", "report") or {}  # as the evaluation wrote it
    extra = {k: options[k] for k in ("title", "notes") if options.get(k)}
    source = lookup(metrics, "samples", "model") or lookup(metrics, "samples", "path")
    if options.get("model_name") or source:  # as the evaluation named it: the option, else the model's file name
        extra["model_name"] = str(options.get("model_name") or Path(str(source)).name)
    return write_report(metrics, Path(out) if out else run_dir, sample_rows=grid_rows_of(run_dir / "report_samples")
                        or None, sweep=load_metrics(sweep) if sweep else None, **extra)  # fmt: skip

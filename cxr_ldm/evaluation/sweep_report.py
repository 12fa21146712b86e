"""A guidance-scale sweep's report: its runs' ``metrics.json`` files, one row per job, FID against alignment."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cxr_ldm.evaluation.report_figures import plot_guidance_sweep
from cxr_ldm.evaluation.report_tables import RANDOM_FLAG, from_random_weights, lookup, markdown_table
from cxr_ldm.utils.atomic import atomic_write_text


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



def guidance_scale_of(metrics: Mapping[str, Any]) -> float | None:
    """The guidance scale a run sampled with (``settings.sampling.guidance_scale``, or ``samples``')."""
    for keys in (("settings", "sampling", "guidance_scale"), ("samples", "guidance_scale"),
                 ("samples", "sampling", "guidance_scale")):  # fmt: skip
        value = lookup(metrics, *keys)
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
        fid, features = lookup(m, "fid_raddino", "value"), "RAD-DINO"
        if fid is None:
            fid, features = lookup(m, "fid", "value"), "torchxrayvision"
        align = lookup(m, "alignment", "mean")
        if fid is None or align is None:
            continue
        points.append({"guidance_scale": float(g), "fid": float(fid), "fid_features": features,
                       "alignment": float(align)})  # fmt: skip
    return sorted(points, key=lambda p: p["guidance_scale"])



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
        rows.append((link, "n/a" if g is None else f"{g:g}", lookup(m, "settings", "sampling", "sampler") or "",
                     lookup(m, "settings", "sampling", "steps") or "", num(lookup(m, "fid", "value"), 3),
                     num(lookup(m, "fid_raddino", "value"), 2), num(lookup(m, "alignment", "mean"), 4),
                     lookup(m, "samples", "n") or ""))  # fmt: skip
    parts = [f"# {title}", "", f"{len(runs)} runs of `python -m cxr_ldm.evaluate -m` in `{root}`.", "",
             markdown_table(("job", "guidance scale", "sampler", "steps", "FID (DenseNet)", "FID (RAD-DINO)",
                             "alignment", "images"), rows), ""]  # fmt: skip
    written: dict[str, Path] = {}
    metrics = [m for _, m in runs]
    if all(guidance_scale_of(m) is not None for m in metrics) and (points := sweep_points(metrics)):
        written["guidance_sweep"] = plot_guidance_sweep(points, out / "figures" / "guidance_sweep.png")
        parts += ["## FID against alignment", "", "![guidance sweep](figures/guidance_sweep.png)", ""]
    if any(from_random_weights(v) for m in metrics for v in m.values() if isinstance(v, Mapping)):
        parts += [f"**Some numbers come from random network weights ({RANDOM_FLAG}); never report them.**", ""]
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.md"
    atomic_write_text(report, "\n".join(parts), "report", durable=False)
    written["report"] = report
    return written


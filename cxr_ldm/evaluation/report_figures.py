"""The figures of ``report.md``, drawn with matplotlib's object API on the Agg canvas (no pyplot, no global
backend state, no display) at fixed sizes."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cxr_ldm.evaluation.report_tables import lookup
from cxr_ldm.utils.figures import captioned_panels, stack_rows


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
        return lookup(e, "adherence", side, "rate")

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


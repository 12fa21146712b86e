"""Pictures people look at: image panels with their text written underneath (README, docs, sample command)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def captioned_panels(
    panels: Sequence[np.ndarray],
    captions: Sequence[str],
    panel_size: int = 192,
    chars_per_line: int = 30,
    max_lines: int = 8,
    font_size: int = 13,
) -> Image.Image:
    """One row of grayscale panels (uint8 or float 0..1, any size) with a wrapped caption under each."""
    if len(panels) != len(captions):
        raise ValueError(f"{len(panels)} panels but {len(captions)} captions")
    font = ImageFont.load_default(size=font_size)
    wrapped = []
    for text in captions:
        lines = textwrap.wrap(text, chars_per_line) or [""]
        if len(lines) > max_lines:
            lines = lines[: max_lines - 1] + [lines[max_lines - 1][: chars_per_line - 3] + "..."]
        wrapped.append(lines)
    line_height = font_size + 3
    text_height = line_height * max(len(lines) for lines in wrapped) + 8
    pad = 6
    width = len(panels) * (panel_size + pad) + pad
    canvas = Image.new("L", (width, panel_size + text_height + 2 * pad), color=255)
    draw = ImageDraw.Draw(canvas)
    for i, (panel, lines) in enumerate(zip(panels, wrapped, strict=True)):
        array = np.asarray(panel)
        if array.dtype != np.uint8:
            array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        image = Image.fromarray(array.squeeze(), mode="L")
        scale = panel_size / max(image.size)
        image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.Resampling.LANCZOS)
        x = pad + i * (panel_size + pad)
        canvas.paste(image, (x + (panel_size - image.size[0]) // 2, pad + (panel_size - image.size[1]) // 2))
        for j, line in enumerate(lines):
            draw.text((x, pad + panel_size + 6 + j * line_height), line, fill=0, font=font)
    return canvas


def stack_rows(rows: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    """Stack figures vertically (e.g. one captioned row per prompt)."""
    width = max(r.size[0] for r in rows)
    canvas = Image.new("L", (width, sum(r.size[1] for r in rows) + gap * (len(rows) - 1)), color=255)
    y = 0
    for row in rows:
        canvas.paste(row.convert("L"), (0, y))
        y += row.size[1] + gap
    return canvas

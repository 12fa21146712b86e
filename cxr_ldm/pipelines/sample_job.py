"""The sample command's work: options checked and the model loaded before anything is written, then the images,
one grid per prompt, ``prompt_grid.png`` (each prompt's images captioned) and ``samples.json``; every file is
complete or absent (temp file + rename), and a re-run of a killed command makes only the missing images.

Image ``k`` over all prompts uses ``sampling.seed + k``, so any image can be regenerated alone.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from cxr_ldm.data.tokenization import tokenize
from cxr_ldm.pipelines.pipeline import CXRLDMPipeline
from cxr_ldm.pipelines.prompts import check_prompt_lengths, collect_prompts
from cxr_ldm.pipelines.sample_folder import sample_to_folder
from cxr_ldm.pipelines.settings import SamplingSettings
from cxr_ldm.utils.atomic import atomic_write
from cxr_ldm.utils.devices import resolve_device
from cxr_ldm.utils.figures import captioned_panels
from cxr_ldm.utils.folders import check_output_folder
from cxr_ldm.utils.images import image_grid, save_png

log = logging.getLogger(__name__)


class SampleConfigError(ValueError):
    """A user error in the sample command's options; reported without a traceback."""


def _model_path(cfg: DictConfig) -> str:
    model = cfg.get("model") or cfg.get("ckpt")
    if not model:
        raise SampleConfigError(
            "no model: give model=PATH (a trained ldm.ckpt, a folder from `python -m cxr_ldm.export`, or the MONAI "
            "bundle folder with text_encoder=PATH)"
        )
    return str(Path(str(model)).expanduser())


def _warn_truncation(prompts: list[str]) -> None:
    """With ``truncate_prompts=true`` over-long prompts are cut at 77 tokens, as in training; say so in the log."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenize(prompts, warn_truncation=True)
    for warning in caught:
        log.warning(str(warning.message))


def _read_images(out_dir: Path, names: list[str]) -> torch.Tensor:
    arrays = [np.asarray(Image.open(out_dir / name).convert("L"), dtype=np.float32) / 255.0 for name in names]
    return torch.from_numpy(np.stack(arrays))[:, None]


def sample_as_configured(cfg: DictConfig) -> dict[str, Any]:
    """Sample as the ``sample`` config says; returns what ``samples.json`` holds."""
    model = _model_path(cfg)
    prompts = collect_prompts(cfg.prompts, cfg.prompts_file)
    n = int(cfg.n_per_prompt)
    if n < 1:
        raise SampleConfigError(f"n_per_prompt= must be >= 1, got {n}")
    truncate = bool(cfg.get("truncate_prompts", False))
    check_prompt_lengths(prompts, "prompts", truncate)
    settings = SamplingSettings.from_config(OmegaConf.to_container(cfg.sampling, resolve=True))
    device = resolve_device(str(cfg.device))
    out_dir = check_output_folder(cfg.out_dir)
    if truncate:
        _warn_truncation(prompts)
    pipe = CXRLDMPipeline.load(model, text_encoder=cfg.get("text_encoder")).to(device)
    settings.check_for(pipe)

    all_prompts = [p for p in prompts for _ in range(n)]
    seeds = [settings.seed + k for k in range(len(all_prompts))]
    names = [f"{i:02d}_{j:03d}.png" for i in range(len(prompts)) for j in range(n)]
    grids = [{"file": f"grid_{i:02d}.png", "prompt": prompt} for i, prompt in enumerate(prompts)]
    log.info("sampling %d images (%d prompts x %d) on %s", len(all_prompts), len(prompts), n, device)
    manifest = sample_to_folder(
        pipe, all_prompts, seeds, out_dir, settings, model=str(Path(model).resolve()), names=names,
        progress=bool(cfg.progress), extra={"grids": grids, "overview": "prompt_grid.png"},
    )  # fmt: skip
    images = _read_images(out_dir, names)
    for i, grid in enumerate(grids):  # each file complete or absent, as the images (temp file + rename)
        pixels = image_grid(images[i * n : (i + 1) * n], nrow=n)
        atomic_write(out_dir / grid["file"], lambda f, pixels=pixels: save_png(pixels, f), "image grid", durable=False)
    # one picture to look at: each prompt's images (two per row) with the prompt written underneath
    per_row = 2 if n > 1 else 1
    panels = [image_grid(images[i * n : (i + 1) * n], nrow=per_row, pad_value=1.0) for i in range(len(prompts))]
    overview = captioned_panels(panels, prompts, panel_size=224, chars_per_line=30)
    atomic_write(out_dir / "prompt_grid.png", lambda f: overview.save(f, format="PNG"), "prompt grid", durable=False)
    log.info("wrote %d images and %d grids to %s", len(names), len(grids), out_dir)
    return manifest

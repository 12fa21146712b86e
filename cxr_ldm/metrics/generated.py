"""Generated images for evaluation: sampled by the shared ``generate`` into a folder, then read as any other.

Writing the samples first (8-bit PNGs and a ``samples.json`` in the sample command's format) keeps memory
bounded whatever the sample count, lets every metric read the same pixels a person would look at, and makes an
interrupted run resumable: image ``k`` always uses ``seed + k``, so images already on disk under the same
settings are kept and only the missing ones are generated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cxr_ldm.metrics.sources import SAMPLES_FILE
from cxr_ldm.models.sampling import generate
from cxr_ldm.utils.images import save_png

log = logging.getLogger(__name__)

SETTINGS_FILE = ".sampling_settings.json"


def _digest(items: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(list(items)).encode("utf-8")).hexdigest()


def sample_to_folder(
    model: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | Path,
    guidance_scale: float = 7.0,
    steps: int = 50,
    sampler: str = "ddim",
    eta: float = 0.0,
    batch_size: int = 16,
    ckpt: str | None = None,
    progress: bool = True,
) -> Path:
    """Write ``out_dir/<k:05d>.png`` for every prompt/seed and ``samples.json``; returns ``out_dir``."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "ckpt": ckpt, "guidance_scale": float(guidance_scale), "steps": int(steps), "sampler": sampler,
        "eta": float(eta), "n": len(prompts),
        "prompts_sha256": _digest(prompts), "seeds_sha256": _digest(seeds),
    }  # fmt: skip
    if ckpt and Path(ckpt).is_file():
        stat = Path(ckpt).stat()
        settings["ckpt_size"], settings["ckpt_mtime_ns"] = stat.st_size, stat.st_mtime_ns
    marker = out / SETTINGS_FILE
    names = [f"{k:05d}.png" for k in range(len(prompts))]
    same = marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == settings
    if not same:  # other settings (or none recorded): nothing on disk may be reused
        for name in names:
            (out / name).unlink(missing_ok=True)
        (out / SAMPLES_FILE).unlink(missing_ok=True)
        marker.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    todo = [k for k, name in enumerate(names) if not (out / name).is_file()]
    if len(todo) < len(names):
        log.info("reusing %d of %d samples already in %s", len(names) - len(todo), len(names), out)
    chunk = max(1, batch_size) * 4
    with tqdm(
        total=len(todo), desc=f"sampling ({sampler}, {steps} steps)", unit="img", disable=not progress
    ) as bar:
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            images = generate(
                model, [prompts[k] for k in idx], [int(seeds[k]) for k in idx], guidance_scale=guidance_scale,
                num_inference_steps=steps, sampler=sampler, batch_size=batch_size, progress=False, eta=eta,
            )  # fmt: skip
            for k, image in zip(idx, images, strict=True):
                tmp = out / f".{names[k]}.tmp.png"
                save_png(image[0], tmp)
                os.replace(tmp, out / names[k])  # a file on disk is always complete
            bar.update(len(idx))
    records = [
        {"file": name, "prompt": prompt, "seed": int(seed), "guidance_scale": float(guidance_scale),
         "steps": int(steps), "sampler": sampler, "eta": float(eta)}
        for name, prompt, seed in zip(names, prompts, seeds, strict=True)
    ]  # fmt: skip
    manifest = {"ckpt": ckpt, "settings": settings, "images": records}
    (out / SAMPLES_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return out

"""Generate chest X-rays from text with a trained stage-2 checkpoint.

    python -m cxr_ldm.sample ckpt=ldm.ckpt prompts='["Large right pleural effusion."]' n_per_prompt=4 out_dir=out

Writes ``<out_dir>/<PP>_<NNN>.png`` (8-bit grayscale), ``grid_<PP>.png`` per prompt and ``samples.json``
with, for every image, its file, prompt, seed and the sampling settings, so that any image can be
regenerated alone (image ``k`` over all prompts uses ``seed + k``).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from cxr_ldm.models.sampling import SAMPLERS, generate
from cxr_ldm.tokenization import tokenize
from cxr_ldm.utils.figures import captioned_panels
from cxr_ldm.utils.images import image_grid, save_png

log = logging.getLogger(__name__)


class SampleConfigError(ValueError):
    """A user error in the sample command's options; reported without a traceback."""


def collect_prompts(prompts: Any, prompts_file: str | None) -> list[str]:
    """Prompts from ``prompts=`` (list or single string) followed by ``prompts_file=`` lines (blank lines skipped)."""
    if isinstance(prompts, (ListConfig, DictConfig)):
        prompts = OmegaConf.to_container(prompts, resolve=True)
    if prompts is None:
        prompts = []
    elif isinstance(prompts, str):
        prompts = [prompts]
    elif not isinstance(prompts, list):
        raise SampleConfigError(f"prompts= must be a list of strings, got {type(prompts).__name__}")
    result = [str(p) for p in prompts]
    if prompts_file:
        path = Path(prompts_file).expanduser()
        if not path.is_file():
            raise SampleConfigError(f"prompts_file={str(path)!r} does not exist")
        result += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not result:
        raise SampleConfigError(
            'no prompts: give prompts=\'["...", "..."]\' or prompts_file=FILE (one per line)'
        )
    empty = [i for i, p in enumerate(result) if not p.strip()]
    if empty:
        raise SampleConfigError(
            f"prompts= contains empty prompts at positions {empty}; every prompt needs text"
        )
    return result


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _check_options(cfg: DictConfig) -> None:
    if not cfg.ckpt:
        raise SampleConfigError(
            "no checkpoint: give ckpt=/path/to/ldm.ckpt (a stage-2 LatentDiffusionModule checkpoint)"
        )
    if not Path(cfg.ckpt).expanduser().is_file():
        raise SampleConfigError(f"ckpt={cfg.ckpt!r} does not exist")
    if cfg.sampler not in SAMPLERS:
        raise SampleConfigError(f"sampler={cfg.sampler!r} is not one of {', '.join(SAMPLERS)}")
    for name in ("n_per_prompt", "steps", "batch_size"):
        if int(cfg[name]) < 1:
            raise SampleConfigError(f"{name}= must be >= 1, got {cfg[name]}")


def _warn_truncation(prompts: list[str]) -> None:
    """Over-long prompts are cut at 77 tokens, as in training; say so in the log."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenize(prompts, warn_truncation=True)
    for warning in caught:
        log.warning(str(warning.message))


def run(cfg: DictConfig) -> dict[str, Any]:
    """Sample as configured; returns what ``samples.json`` holds."""
    from cxr_ldm.models.diffusion import LatentDiffusionModule

    _check_options(cfg)
    prompts = collect_prompts(cfg.prompts, cfg.prompts_file)
    _warn_truncation(prompts)
    device = resolve_device(str(cfg.device))
    model = LatentDiffusionModule.load_from_checkpoint(str(Path(cfg.ckpt).expanduser()), map_location="cpu")
    model = model.to(device).eval()

    n = int(cfg.n_per_prompt)
    all_prompts = [p for p in prompts for _ in range(n)]
    seeds = [int(cfg.seed) + k for k in range(len(all_prompts))]
    log.info("sampling %d images (%d prompts x %d) on %s", len(all_prompts), len(prompts), n, device)
    images = generate(
        model,
        all_prompts,
        seeds,
        guidance_scale=float(cfg.guidance_scale),
        num_inference_steps=int(cfg.steps),
        sampler=str(cfg.sampler),
        batch_size=int(cfg.batch_size),
        progress=bool(cfg.progress),
        eta=float(cfg.eta),
    )

    out_dir = Path(cfg.out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    records, grids = [], []
    for k, (prompt, seed) in enumerate(zip(all_prompts, seeds, strict=True)):
        i, j = divmod(k, n)
        name = f"{i:02d}_{j:03d}.png"
        save_png(images[k, 0], out_dir / name)
        records.append(
            {
                "file": name,
                "prompt": prompt,
                "prompt_index": i,
                "seed": seed,
                "guidance_scale": float(cfg.guidance_scale),
                "steps": int(cfg.steps),
                "sampler": str(cfg.sampler),
                "eta": float(cfg.eta),
            }
        )
    for i, prompt in enumerate(prompts):
        name = f"grid_{i:02d}.png"
        save_png(image_grid(images[i * n : (i + 1) * n], nrow=n), out_dir / name)
        grids.append({"file": name, "prompt": prompt})
    # one picture to look at: each prompt's images (two per row) with the prompt written underneath
    per_row = 2 if n > 1 else 1
    panels = [image_grid(images[i * n : (i + 1) * n], nrow=per_row, pad_value=1.0) for i in range(len(prompts))]
    captioned_panels(panels, prompts, panel_size=224, chars_per_line=30).save(out_dir / "prompt_grid.png")
    summary = {
        "ckpt": str(Path(cfg.ckpt).expanduser().resolve()),
        "images": records,
        "grids": grids,
        "overview": "prompt_grid.png",
    }
    (out_dir / "samples.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    log.info("wrote %d images and %d grids to %s", len(records), len(grids), out_dir)
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except SampleConfigError as err:
        # SystemExit is not an Exception: Hydra lets it through, so the user sees one line and exit status 1.
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()

"""``python -m cxr_ldm.demo out_dir=DIR``: phantom data -> stage 1 -> stage 2 -> samples, as a user would run them.

Each step is the project's own command in a subprocess (the same commands the README shows), and a step
whose result is already in ``out_dir`` is skipped, so an interrupted demo resumes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from cxr_ldm.utils.cli import require_options


def _run(args: list[str], what: str) -> None:
    print(f"\n=== {what}\n$ python {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, *args])
    if proc.returncode != 0:
        raise SystemExit(f"demo: {what} failed (exit {proc.returncode}); fix the error above and re-run: "
                         f"finished steps are kept and skipped.")


def _best_or_last(run_dir: Path) -> Path:
    ckpts = run_dir / "checkpoints"
    best = [p for p in ckpts.glob("epoch_*.ckpt")]
    if best:
        return max(best, key=lambda p: p.stat().st_mtime)
    return ckpts / "last.ckpt"


def _train(stage: str, experiment: str, out: Path, cfg: DictConfig, extra: list[str]) -> Path:
    target = out / f"{stage}.ckpt"
    if target.is_file():
        print(f"=== {stage}: {target} exists, skipped")
        return target
    run_dir = out / "runs" / stage
    common = [
        f"paths.data_dir={out / 'data'}", f"paths.log_dir={out / 'logs'}", f"hydra.run.dir={run_dir}",
        f"data.phantom.n_studies={cfg.n_studies}", f"data.image_size={cfg.image_size}",
        f"data.phantom.seed={cfg.seed}", f"seed={cfg.seed}", "print_config=false",
    ]  # fmt: skip
    resume = ["ckpt_path=last"] if (run_dir / "checkpoints").is_dir() else []
    _run(["-m", "cxr_ldm.train", f"experiment={experiment}", *common, *resume, *extra], f"train {stage}")
    shutil.copyfile(_best_or_last(run_dir), target)
    return target


@hydra.main(version_base="1.3", config_path="conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    require_options(cfg, {"out_dir": "folder for data, checkpoints and samples"}, "cxr_ldm.demo")
    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    aekl = _train("aekl", "aekl_phantom", out, cfg, list(cfg.aekl_overrides))
    ldm = _train("ldm", "ldm_phantom", out, cfg, [f"model.autoencoder_ckpt={aekl}", *cfg.ldm_overrides])
    samples = out / "samples"
    prompts = json.dumps(OmegaConf.to_container(cfg.prompts))
    _run(
        ["-m", "cxr_ldm.sample", f"ckpt={ldm}", f"prompts={prompts}", f"n_per_prompt={cfg.n_per_prompt}",
         f"steps={cfg.steps}", f"sampler={cfg.sampler}", f"guidance_scale={cfg.guidance_scale}",
         f"seed={cfg.seed}", f"out_dir={samples}"],
        "sample",
    )  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    print(
        f"\ndemo finished in {minutes:.1f} min\n"
        f"  phantom data:       {out / 'data'}\n"
        f"  stage-1 checkpoint: {aekl}\n"
        f"  stage-2 checkpoint: {ldm}\n"
        f"  samples:            {samples} (samples.json lists file, prompt, seed, guidance, steps, sampler)\n"
        f"  training logs:      {out / 'runs'}\n"
        f"sample again with: python -m cxr_ldm.sample ckpt={ldm} prompts='[\"Small left pleural effusion.\"]' "
        f"out_dir={out / 'more_samples'}"
    )


if __name__ == "__main__":
    main()

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


@hydra.main(version_base="1.3", config_path="conf/inference", config_name="demo")
def main(cfg: DictConfig) -> None:
    require_options(cfg, {"out_dir": "folder for data, checkpoints and samples"}, "cxr_ldm.demo")
    out = Path(cfg.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sampling = [f"sampling.{k}={v}" for k, v in cfg.sampling.items() if v is not None]
    if cfg.get("model"):
        model, trained = str(Path(str(cfg.model)).expanduser()), None
    else:
        aekl = _train("aekl", "aekl_phantom", out, cfg, list(cfg.aekl_overrides))
        ldm = _train("ldm", "ldm_phantom", out, cfg, [f"model.autoencoder_ckpt={aekl}", *cfg.ldm_overrides])
        model, trained = str(ldm), (aekl, ldm)
    samples = out / "samples"
    prompts = json.dumps(OmegaConf.to_container(cfg.prompts))
    text = [f"text_encoder={cfg.text_encoder}"] if cfg.get("text_encoder") else []
    _run(
        ["-m", "cxr_ldm.sample", f"model={model}", *text, f"prompts={prompts}", f"n_per_prompt={cfg.n_per_prompt}",
         *sampling, f"out_dir={samples}"],
        "sample",
    )  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    lines = [f"\ndemo finished in {minutes:.1f} min"]
    if trained is not None:
        lines += [f"  phantom data:       {out / 'data'}", f"  stage-1 checkpoint: {trained[0]}",
                  f"  stage-2 checkpoint: {trained[1]}", f"  training logs:      {out / 'runs'}"]  # fmt: skip
    lines += [
        f"  samples:            {samples} (samples.json lists file, prompt, seed and sampling settings)",
        f"sample again with: python -m cxr_ldm.sample model={model} prompts='[\"Small left pleural effusion.\"]' "
        f"out_dir={out / 'more_samples'}",
    ]
    if trained is not None:
        lines.append(f"export it with:    python -m cxr_ldm.export ckpt={model} out_dir={out / 'exported'}")
    print("\n".join(lines))

if __name__ == "__main__":
    main()

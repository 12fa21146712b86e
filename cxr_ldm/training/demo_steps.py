"""The demo's steps, each the project's own command in a subprocess (as the README shows them); a step whose
result is already in the demo's folder is skipped, so an interrupted demo resumes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cxr_ldm.utils.checkpoints import pick_checkpoint


def run_step(args: list[str], what: str, timings: dict[str, float | None]) -> None:
    """``python ARGS`` as a user would type it, its wall time into ``timings[what]``; a failed step ends the
    demo, keeping the finished ones."""
    print(f"\n=== {what}\n$ python {' '.join(args)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args])
    timings[what] = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"demo: {what} failed (exit {proc.returncode}); fix the error above and re-run: "
                         f"finished steps are kept and skipped.")  # fmt: skip


def train_stage(stage: str, experiment: str, out: Path, cfg: DictConfig, extra: list[str],
                timings: dict[str, float | None]) -> Path:  # fmt: skip
    """Train ``experiment`` on the demo's phantom data into ``out/runs/<stage>`` (resuming an interrupted run);
    the kept checkpoint is copied to ``out/<stage>.ckpt``."""
    target = out / f"{stage}.ckpt"
    if target.is_file():
        print(f"=== {stage}: {target} exists, skipped")
        timings[f"train {stage}"] = None
        return target
    run_dir = out / "runs" / stage
    common = [
        f"paths.data_dir={out / 'data'}", f"paths.log_dir={out / 'logs'}", f"hydra.run.dir={run_dir}",
        f"data.phantom.n_studies={cfg.n_studies}", f"data.image_size={cfg.image_size}",
        f"data.phantom.seed={cfg.seed}", f"seed={cfg.seed}", "print_config=false",
    ]  # fmt: skip
    resume = ["ckpt_path=last"] if (run_dir / "checkpoints").is_dir() else []
    run_step(["-m", "cxr_ldm.train", f"experiment={experiment}", *common, *resume, *extra], f"train {stage}", timings)
    shutil.copyfile(pick_checkpoint(run_dir, "best") or run_dir / "checkpoints" / "last.ckpt", target)
    return target


def sample_prompts(model: str, cfg: DictConfig, samples: Path, timings: dict[str, float | None]) -> None:
    """The demo's prompts through ``python -m cxr_ldm.sample`` with the demo's sampling settings."""
    sampling = [f"sampling.{k}={v}" for k, v in cfg.sampling.items() if v is not None]
    prompts = json.dumps(OmegaConf.to_container(cfg.prompts))
    text = [f"text_encoder={cfg.text_encoder}"] if cfg.get("text_encoder") else []
    run_step(["-m", "cxr_ldm.sample", f"model={model}", *text, f"prompts={prompts}",
              f"n_per_prompt={cfg.n_per_prompt}", *sampling, f"out_dir={samples}"], "sample", timings)  # fmt: skip


def step_times(timings: dict[str, float | None]) -> str:
    """``train aekl 2.4 min (the phantom data included), train ldm 8.1 min, sample 0.4 min``."""
    parts = []
    for what, seconds in timings.items():
        text = "skipped (its result was there)" if seconds is None else f"{seconds / 60:.1f} min"
        if what == "train aekl" and seconds is not None:
            text += " (making the phantom data included, on a first run)"
        parts.append(f"{what} {text}")
    return ", ".join(parts)


def summary(out: Path, model: str, trained: tuple[Path, Path] | None, minutes: float,
            timings: dict[str, float | None]) -> str:  # fmt: skip
    """What the demo made, how long each step took, and the commands that go on from there."""
    samples = out / "samples"
    lines = [f"\ndemo finished in {minutes:.1f} min", f"  time per step:      {step_times(timings)}"]
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
    return "\n".join(lines)

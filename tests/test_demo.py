"""``python -m cxr_ldm.demo``: the whole job, shrunk to seconds, leaves the checkpoints and samples it promises."""

from __future__ import annotations

import json
import re

import torch
from helpers import run_module
from PIL import Image

from cxr_ldm.models.diffusion import LatentDiffusionModule

TINY = ["debug=tiny", "trainer.limit_train_batches=2"]  # the demo's n_studies= and image_size= still apply


def test_demo_end_to_end_and_resume(tmp_path):
    out = tmp_path / "demo"
    args = [f"out_dir={out}", "n_studies=40", "image_size=32", "n_per_prompt=2", "sampling.steps=3",
            f"aekl_overrides={json.dumps(TINY)}", f"ldm_overrides={json.dumps(TINY)}"]  # fmt: skip
    proc = run_module("cxr_ldm.demo", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (out / "aekl.ckpt").is_file() and (out / "ldm.ckpt").is_file()
    records = json.loads((out / "samples" / "samples.json").read_text())["images"]
    prompts = {r["prompt"] for r in records}
    assert len(records) == 2 * len(prompts) and len(prompts) == 5
    assert {"Large right pleural effusion.", "Large left pleural effusion."} <= prompts
    with Image.open(out / "samples" / records[0]["file"]) as im:
        assert im.size == (32, 32) and im.mode == "L"
    assert (out / "samples" / "prompt_grid.png").is_file()
    model = LatentDiffusionModule.load_from_checkpoint(out / "ldm.ckpt", map_location="cpu")
    assert tuple(model.latent_shape)[-1] == 8 and torch.isfinite(model.scale_factor)
    assert "demo finished" in proc.stdout
    times = re.search(r"time per step: +train aekl ([\d.]+) min .*, train ldm ([\d.]+) min, sample ([\d.]+) min",
                      proc.stdout)  # fmt: skip
    total = float(re.search(r"demo finished in ([\d.]+) min", proc.stdout).group(1))
    assert times, proc.stdout[-2000:]
    assert abs(sum(float(t) for t in times.groups()) - total) <= 0.1 + 0.05 * total  # the steps make up the whole
    # the terminal shows what matters: none of the libraries' lines a user cannot act on
    terminal = proc.stdout + proc.stderr
    for noise in ("💡 Tip", "alembic", "prepend your python command with `srun`", "module(s) in eval mode",
                  "LeafSpec", "SLURM job None", "Trainer already configured"):  # fmt: skip
        assert noise not in terminal, noise

    again = run_module("cxr_ldm.demo", *args, cwd=tmp_path)
    assert again.returncode == 0
    assert "aekl: " in again.stdout and "exists, skipped" in again.stdout
    assert "train aekl skipped (its result was there), train ldm skipped (its result was there), sample" in again.stdout

    # model=: the demo samples its prompts from a given model and trains nothing
    other = tmp_path / "other"
    given = run_module("cxr_ldm.demo", f"out_dir={other}", f"model={out / 'ldm.ckpt'}", "n_per_prompt=1",
                       "sampling.steps=2", cwd=tmp_path)  # fmt: skip
    assert given.returncode == 0, given.stderr[-3000:]
    assert not (other / "runs").exists() and not (other / "ldm.ckpt").exists()
    assert len(json.loads((other / "samples" / "samples.json").read_text())["images"]) == 5

"""``python -m cxr_ldm.sample`` end to end on a tiny trained checkpoint, and its option errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import compose_config, run_module
from PIL import Image

from cxr_ldm.models.components import ModelLoadError
from cxr_ldm.pipelines import CXRLDMPipeline
from cxr_ldm.pipelines.prompts import PromptError, collect_prompts
from cxr_ldm.pipelines.sample_job import SampleConfigError
from cxr_ldm.pipelines.sample_job import sample_as_configured as run
from cxr_ldm.pipelines.settings import SamplingConfigError
from cxr_ldm.utils.images import image_grid

pytest_plugins = ["ldm_fixtures"]

LONG_PROMPT = " ".join(["There is a large right pleural effusion with adjacent atelectasis."] * 12)


def sample_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_module("cxr_ldm.sample", *args, cwd=cwd, timeout=300)


def test_sample_command_end_to_end(tmp_path: Path, trained_ldm_ckpt: Path):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text(f"\n{LONG_PROMPT}\n\n", encoding="utf-8")
    out = tmp_path / "out"
    result = sample_cli(
        f"model={trained_ldm_ckpt}",
        'prompts=["Large right pleural effusion.","Moderate cardiomegaly."]',
        f"prompts_file={prompts_file}",
        "n_per_prompt=2",
        "sampling.steps=2",
        "sampling.guidance_scale=5",
        "sampling.sampler=ddim",
        "sampling.seed=3",
        "device=cpu",
        f"out_dir={out}",
        "truncate_prompts=true",  # the long prompt is cut at 77 tokens, as training does (else: an error)
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "truncated to 77" in result.stdout + result.stderr

    summary = json.loads((out / "samples.json").read_text())
    records = summary["images"]
    assert [r["file"] for r in records] == [
        "00_000.png",
        "00_001.png",
        "01_000.png",
        "01_001.png",
        "02_000.png",
        "02_001.png",
    ]
    assert [r["seed"] for r in records] == [3, 4, 5, 6, 7, 8]
    assert [r["prompt"] for r in records][::2] == [
        "Large right pleural effusion.",
        "Moderate cardiomegaly.",
        LONG_PROMPT,
    ]
    assert all(r["guidance_scale"] == 5.0 and r["steps"] == 2 and r["sampler"] == "ddim" for r in records)
    for record in records:
        with Image.open(out / record["file"]) as png:
            assert png.mode == "L" and png.size == (32, 32)
    for i in range(3):
        with Image.open(out / f"grid_{i:02d}.png") as grid:
            assert grid.mode == "L" and grid.size == (2 * 34 + 2, 36)
    assert not (tmp_path / "outputs").exists()  # Hydra's logs stay inside out_dir
    assert (out / ".hydra_logs").is_dir()

    # any image can be regenerated alone from its record
    record = records[3]
    image = CXRLDMPipeline.load(trained_ldm_ckpt)(
        [record["prompt"]], seeds=[record["seed"]], guidance_scale=5.0, num_inference_steps=2, sampler="ddim",
        progress=False,
    )
    with Image.open(out / record["file"]) as png:
        written = np.asarray(png).astype(int)
    assert np.abs(written - image_grid(image, nrow=1, padding=0).astype(int)).max() <= 1


def test_missing_checkpoint_is_a_one_line_error(tmp_path: Path):
    result = sample_cli("prompts=[Effusion]", f"out_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: no model: give model=PATH")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "samples.json").exists()


def sample_cfg(**overrides: object):
    return compose_config("sample", [f"{k}={v}" for k, v in overrides.items()], inference=True)


def test_option_errors_name_the_option(tmp_path: Path, trained_ldm_ckpt: Path):
    out = tmp_path / "out"
    with pytest.raises(PromptError, match="prompts="):
        run(sample_cfg(model=trained_ldm_ckpt, out_dir=out))
    with pytest.raises(PromptError, match="prompts="):
        run(sample_cfg(model=trained_ldm_ckpt, out_dir=out, prompts='["ok", " "]'))
    with pytest.raises(ModelLoadError, match="model not found: .*missing.ckpt"):
        run(sample_cfg(model=tmp_path / "missing.ckpt", prompts="[Effusion]", out_dir=out))
    with pytest.raises(SamplingConfigError, match="sampling.sampler='heun' is not one of ddim, dpm"):
        run(sample_cfg(model=trained_ldm_ckpt, prompts="[Effusion]", **{"sampling.sampler": "heun"}, out_dir=out))
    with pytest.raises(SamplingConfigError, match="sampling.steps=0 must be >= 1"):
        run(sample_cfg(model=trained_ldm_ckpt, prompts="[Effusion]", **{"sampling.steps": 0}, out_dir=out))
    with pytest.raises(SamplingConfigError, match="sampling.steps='many' must be a int"):
        run(sample_cfg(model=trained_ldm_ckpt, prompts="[Effusion]", **{"sampling.steps": "many"}, out_dir=out))
    with pytest.raises(SampleConfigError, match="n_per_prompt= must be >= 1"):
        run(sample_cfg(model=trained_ldm_ckpt, prompts="[Effusion]", n_per_prompt=0, out_dir=out))
    assert not out.exists()  # nothing written for a refused command
    with pytest.raises(PromptError, match="prompts_file="):
        collect_prompts([], str(tmp_path / "none.txt"))
    assert collect_prompts("One prompt.", None) == ["One prompt."]


def test_wrong_models_are_one_line_and_write_nothing(tmp_path: Path, trained_ldm_ckpt: Path):
    """A folder of the wrong kind, or an export whose UNet does not fit its text encoder: one line, no out_dir."""
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("not a model")
    exported = CXRLDMPipeline.load(trained_ldm_ckpt).save_pretrained(tmp_path / "exported")
    unet_config = exported / "unet" / "config.json"
    config = json.loads(unet_config.read_text())
    config["cross_attention_dim"] = 32
    unet_config.write_text(json.dumps(config))
    cases = [
        (not_a_model, "is a folder of neither known kind: expected an exported model (model_index.json)"),
        (exported, "the text encoder gives 64-wide tokens but the UNet's cross_attention_dim is 32"),
    ]
    for model, message in cases:
        out = tmp_path / f"out_{model.name}"
        result = sample_cli(f"model={model}", "prompts=[Effusion]", f"out_dir={out}", cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, last
        assert not (out / "samples.json").exists() and not list(out.glob("*.png"))

"""A guidance-scale sweep as users run it: ``python -m cxr_ldm.evaluate -m sampling.guidance_scale=1,7``. Each job
evaluates into ``out_dir/<job>``; when the multirun ends, the Hydra callback writes ``out_dir/report.md`` with FID
against alignment, one point per guidance scale; ``python -m cxr_ldm.report --sweep-dir`` rewrites it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_module
from metrics.test_alignment import biovil_folder  # noqa: F401 (a fixture: the BioViL-T folder layout)
from PIL import Image

pytest_plugins = ["ldm_fixtures"]


@pytest.mark.slow
def test_guidance_sweep_writes_one_folder_per_job_and_the_sweep_report(
    tmp_path: Path, trained_ldm_ckpt: Path, phantom32: Path, biovil_folder: Path  # noqa: F811
):
    out = tmp_path / "sweep"
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": str(tmp_path)}
    result = run_module(
        "cxr_ldm.evaluate", "-m", f"out_dir={out}", "metrics=[fid,alignment]", f"model={trained_ldm_ckpt}",
        f"data_dir={phantom32}", "allow_random_xrv=true", f"alignment_weights={biovil_folder}",
        f"cache_dir={tmp_path / 'cache'}", "n_real=null", "sampling.n=3", "sampling.steps=2",
        "sampling.guidance_scale=1,7", "report.images_per_prompt=1", "report.prompts=[Moderate cardiomegaly.]",
        "batch_size=8", "num_workers=0", "device=cpu", "progress=false", cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = [json.loads((out / str(k) / "metrics.json").read_text()) for k in (0, 1)]
    assert [m["settings"]["sampling"]["guidance_scale"] for m in jobs] == [1.0, 7.0]
    assert [m["samples"]["guidance_scale"] for m in jobs] == [1.0, 7.0]
    for k, m in enumerate(jobs):
        assert m["settings"]["config"]["out_dir"] == str(out / str(k))  # each job in its own folder
        assert (out / str(k) / "report.md").is_file() and len(list((out / str(k) / "samples").glob("*.png"))) == 3
    # real features are extracted once for the whole sweep
    assert [m["fid"]["real_features_cache"] for m in jobs] == ["miss (stored)", "hit"]

    report = (out / "report.md").read_text()
    for m in jobs:
        assert f"{m['fid']['value']:.3f}" in report and f"{m['alignment']['mean']:.4f}" in report
    assert "[0](0/report.md)" in report and "[1](1/report.md)" in report
    with Image.open(out / "figures" / "guidance_sweep.png") as plot:
        assert plot.size == (600, 450)

    (out / "report.md").unlink()
    again = run_module("cxr_ldm.report", "--sweep-dir", str(out), cwd=tmp_path, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "report.md").read_text() == report

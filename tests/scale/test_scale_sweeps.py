"""Sweeps on this machine: Optuna over optimized_metric; a failing job does not take the others down."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from helpers import run_module

pytestmark = pytest.mark.slow

SMALL = ["experiment=aekl_phantom", "debug=tiny", "data.batch_size=4"]


def _metric(job: Path) -> float:
    (value,) = re.findall(r"optimized_metric val/ms_ssim = ([0-9.eE+-]+)", (job / "train.log").read_text())
    return float(value)


def test_optuna_search_optimizes_the_returned_metric(tmp_path, shared_data_dir):
    sweep = tmp_path / "sweep"
    proc = run_module(
        "cxr_ldm.train", "hparams_search=aekl_optuna", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}",
        f"paths.data_dir={shared_data_dir}", *SMALL, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    jobs = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert [p.name for p in jobs] == ["0", "1", "2"]  # one folder per trial
    values = {job.name: _metric(job) for job in jobs}
    best = max(values, key=values.get)  # val/ms_ssim: maximized (optimized_mode=max)
    assert results["best_value"] == pytest.approx(values[best])
    overrides = yaml.safe_load((sweep / best / ".hydra" / "overrides.yaml").read_text())
    for name, value in results["best_params"].items():
        assert f"{name}={value}" in overrides
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file()


def test_a_failing_job_is_reported_and_the_others_keep_their_results(tmp_path, shared_data_dir):
    """Job 1 fails (negative learning rate); job 0 keeps its folder, checkpoint and finished wandb run.

    Also the default sweep folder, ``logs/<task>/multiruns/<date>_<time>_<id>`` under the working directory.
    """
    proc = run_module(
        "cxr_ldm.train", "-m", "model.optimizer_g.lr=1e-4,-1.0", "logger=wandb", f"paths.data_dir={shared_data_dir}",
        *SMALL, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Invalid learning rate: -1.0" in proc.stderr
    (sweep,) = (tmp_path / "logs" / "aekl_phantom" / "multiruns").iterdir()
    ckpt = torch.load(sweep / "0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3 and 0.0 <= _metric(sweep / "0") <= 1.0
    assert not (sweep / "1" / "checkpoints" / "last.ckpt").exists()
    run_ids = []
    for job in ("0", "1"):  # every job its own wandb run, finished at the job's end (also the failed one)
        (offline_run,) = (sweep / job / "wandb").glob("offline-run-*")
        run_ids.append(offline_run.name.rsplit("-", 1)[-1])
        assert f"finishing run cxr-ldm/{run_ids[-1]}" in (offline_run / "logs" / "debug.log").read_text()
    assert run_ids[0] != run_ids[1]

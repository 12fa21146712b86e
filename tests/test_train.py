"""``python -m cxr_ldm.train``: config composition, run folders, checkpoints, resume, loggers."""

from __future__ import annotations

import re
from pathlib import Path

import hydra
import pandas as pd
import pytest
import torch
from helpers import CONF_DIR, compose_config, run_module
from omegaconf import OmegaConf

from cxr_ldm.utils import resolvers  # noqa: F401
from cxr_ldm.utils.checkpoints import resolve_ckpt_path
from cxr_ldm.utils.loggers import resolve_wandb_offline

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def compose_train(overrides: list[str], tmp_path: Path):
    overrides = [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/out", *overrides]
    return compose_config("train", overrides, return_hydra_config=True)


def test_debug_tiny_is_a_tiny_run_and_the_command_line_wins(tmp_path):
    """``debug=tiny`` (conf/debug/tiny.yaml, the tests' tiny run): over the experiment, under the command line."""
    cfg = compose_train(["experiment=ldm_phantom", "debug=tiny"], tmp_path)
    data, trainer = cfg.data, cfg.trainer
    assert (data.phantom.n_studies, data.phantom.raw_size, data.image_size, data.batch_size) == (60, 64, 32, 8)
    assert (trainer.max_epochs, trainer.limit_train_batches, trainer.limit_val_batches) == (1, 3, 1)
    assert data.num_workers == 0 and cfg.print_config is False
    assert "sample_grid" in cfg.callbacks and "csv" in cfg.logger  # unlike debug=default, these stay
    cfg = compose_train(["trainer.max_epochs=3", "experiment=aekl_phantom", "debug=tiny", "data.batch_size=4"], tmp_path)
    assert (cfg.trainer.max_epochs, cfg.data.batch_size, cfg.trainer.limit_train_batches) == (3, 4, 3)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    assert cfg.task_name == experiment
    for group in ("data", "model", "trainer"):
        assert "_target_" in cfg[group]
    assert cfg.optimized_metric in ("val/ms_ssim", "val/loss")
    assert cfg.callbacks.model_checkpoint.monitor == cfg.optimized_metric
    OmegaConf.resolve(cfg.data)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    trainer = hydra.utils.instantiate(cfg.trainer, accelerator="cpu", devices=1, strategy="auto", precision="32-true",
                                      logger=False, enable_checkpointing=False)  # fmt: skip
    assert datamodule.hparams.image_size == cfg.data.image_size
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_reference_aekl_config_instantiates_with_reference_sizes(tmp_path):
    cfg = compose_train(["experiment=aekl"], tmp_path)
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    assert sum(p.numel() for p in model.autoencoder.parameters()) == 4_607_848
    assert sum(p.numel() for p in model.discriminator.parameters()) == 2_763_585
    assert (cfg.data.image_size, cfg.data.batch_size, cfg.data._target_) == (512, 12, "cxr_ldm.data.datamodule.CXRDataModule")
    assert cfg.data.data_dir.endswith("mimic-cxr-prepared")
    assert model.hparams.adv_start == 5 and model.hparams.perceptual_weight == 0.002


def test_run_folders_are_unique_within_a_second(tmp_path):
    a = compose_train([], tmp_path).hydra.run.dir
    b = compose_train([], tmp_path).hydra.run.dir
    assert a != b
    assert a.rsplit("_", 1)[0][:-3] == b.rsplit("_", 1)[0][:-3]  # same date-time prefix up to the minute


def test_ckpt_path_resolution(tmp_path):
    run = tmp_path / "run"
    assert resolve_ckpt_path(None, run) is None
    assert resolve_ckpt_path("last", run) is None  # nothing yet: start fresh
    (run / "checkpoints").mkdir(parents=True)
    older = run / "checkpoints" / "epoch_000.ckpt"
    torch.save({"global_step": 1}, older)
    assert resolve_ckpt_path("last", run) == str(older)
    last = run / "checkpoints" / "last.ckpt"
    torch.save({"global_step": 1}, last)
    assert resolve_ckpt_path("last", run) == str(last)  # the same step: last.ckpt
    newer = run / "checkpoints" / "epoch_001.ckpt"
    torch.save({"global_step": 2}, newer)  # written, then the job died before its last.ckpt
    assert resolve_ckpt_path("last", run) == str(newer)
    newer.write_bytes(newer.read_bytes()[:-40])  # truncated (e.g. copied incompletely): skipped
    assert resolve_ckpt_path("last", run) == str(last)
    (run / "checkpoints" / ".last.ckpt.999999.tmp").write_bytes(b"half")  # a killed writer's temporary file
    resolve_ckpt_path("last", run)
    assert not (run / "checkpoints" / ".last.ckpt.999999.tmp").exists()
    with pytest.raises(FileNotFoundError, match="ckpt_path=/nope.ckpt"):
        resolve_ckpt_path("/nope.ckpt", run)


def test_wandb_goes_offline_without_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert resolve_wandb_offline(None) is True
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_offline(None) is False
    assert resolve_wandb_offline(True) is True
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_offline(False) is True
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_wandb_offline(None) is False


def test_aekl_phantom_trains_saves_and_resumes(tmp_path, shared_data_dir):
    run_dir = tmp_path / "run"
    common = ["experiment=aekl_phantom", f"paths.data_dir={shared_data_dir}", f"hydra.run.dir={run_dir}", "debug=tiny"]
    first = run_module("cxr_ldm.train", *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "optimized_metric val/ms_ssim" in first.stdout + first.stderr
    assert (run_dir / "config_tree.yaml").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file() and list((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    ms_ssim = metrics["val/ms_ssim"].dropna()
    assert len(ms_ssim) == 1 and 0.0 <= ms_ssim.iloc[0] <= 1.0  # 3 steps: barely trained
    assert list(run_dir.rglob("reconstructions/epoch_*.png"))
    step_after_first = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert step_after_first == 3  # 3 batches, generator steps only

    second = run_module("cxr_ldm.train", *common, "ckpt_path=last", "trainer.max_epochs=2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {last}" in second.stdout + second.stderr
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 6
    # the returned optimized_metric is the kept (best) checkpoint's score, not the last epoch's
    returned = float(re.search(r"optimized_metric val/ms_ssim = ([0-9.eE+-]+)", second.stdout + second.stderr)[1])
    state = torch.load(last, map_location="cpu", weights_only=False)["callbacks"]
    best = next(v["best_model_score"] for k, v in state.items() if k.startswith("ModelCheckpoint"))
    last_epoch = pd.read_csv(run_dir / "csv" / "metrics.csv")["val/ms_ssim"].dropna().iloc[-1]
    assert returned == pytest.approx(float(best), rel=1e-6) and float(best) >= last_epoch - 1e-9


def test_wandb_logger_runs_offline_with_no_login(tmp_path, shared_data_dir):
    run_dir = tmp_path / "run"
    proc = run_module(
        "cxr_ldm.train", "experiment=aekl_phantom", "logger=wandb", f"paths.data_dir={shared_data_dir}",
        f"hydra.run.dir={run_dir}", "debug=tiny",
        cwd=tmp_path, env={"WANDB_MODE": None, "WANDB_API_KEY": None, "NETRC": str(tmp_path / "none"),
                           "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1

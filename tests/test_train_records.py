"""What a training run leaves and how it ends: run_info.json, a re-run of a finished run, a run that never
validated, and one wandb run per run folder. Real ``python -m cxr_ldm.train`` runs on phantom data."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from datetime import datetime
from importlib import metadata
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from helpers import CONF_DIR, REPO, run_module
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from cxr_ldm.utils.loggers import wandb_run_id


def _best_score(ckpt: Path) -> float:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["callbacks"]
    return float(next(v["best_model_score"] for k, v in state.items() if k.startswith("ModelCheckpoint")))


def _returned(output: str) -> float:
    return float(re.search(r"optimized_metric val/ms_ssim = ([0-9.eE+-]+)", output)[1])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, shared_data_dir):
    tmp = tmp_path_factory.mktemp("records")
    run_dir = tmp / "run"
    args = ["experiment=aekl_phantom", f"paths.data_dir={shared_data_dir}", f"hydra.run.dir={run_dir}", "debug=tiny"]
    proc = run_module("cxr_ldm.train", *args, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"tmp": tmp, "run": run_dir, "args": args, "proc": proc}


def test_run_info_json_records_the_run(finished_run):
    info = json.loads((finished_run["run"] / "run_info.json").read_text())
    assert info["command"][1:3] == ["-m", "cxr_ldm.train"] and info["command"][3:] == finished_run["args"]
    assert info["overrides"] == [a for a in finished_run["args"] if not a.startswith("hydra.")]  # Hydra's own apart
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert info["git"] == "not a git checkout" or info["git"]["commit"] == commit
    for package, key in (("torch", "torch"), ("lightning", "lightning"), ("monai", "monai"), ("hydra-core", "hydra")):
        assert info["versions"][key] == metadata.version(package)
    assert info["versions"]["python"].count(".") == 2
    assert info["cuda"]["build"] == torch.version.cuda and info["cuda"]["available"] == torch.cuda.is_available()
    assert isinstance(info["gpus"], list)
    assert (info["seed"], info["rank_seeds"], info["world_size"]) == (12345, [12345], 1)
    assert info["host"] == socket.gethostname()
    started, ended = (datetime.fromisoformat(info[k]) for k in ("started", "ended"))
    assert started <= ended and info["status"] == "finished" and info["previous_sessions"] == []


def test_rerunning_a_finished_run_ends_cleanly_with_the_kept_best_score(finished_run):
    """ckpt_path=last on a run that already reached max_epochs: nothing to train, exit 0, the best score."""
    last = finished_run["run"] / "checkpoints" / "last.ckpt"
    proc = run_module("cxr_ldm.train", *finished_run["args"], "ckpt_path=last", cwd=finished_run["tmp"])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "KeyError" not in output and "Traceback" not in output
    assert "the run had already finished" in output
    assert _returned(output) == pytest.approx(_best_score(last), rel=1e-6)
    info = json.loads((finished_run["run"] / "run_info.json").read_text())
    assert info["ckpt_path"] == str(last) and info["status"] == "finished"
    assert [s["status"] for s in info["previous_sessions"]] == ["finished"]


def test_a_run_that_never_validated_says_why(tmp_path, shared_data_dir):
    """trainer.max_steps=2 with 3 batches an epoch: no validation, so no val/ms_ssim; the run says why."""
    proc = run_module(
        "cxr_ldm.train", "experiment=aekl_phantom", f"paths.data_dir={shared_data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}", "debug=tiny", "trainer.max_steps=2", cwd=tmp_path,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert re.search(
        r"optimized_metric=val/ms_ssim was not logged: no validation ran: it runs at the end of each epoch "
        r"\(3 training batches an epoch, so first after step 3\), and this run stopped after 2 steps "
        r"\(trainer.max_steps=2\); let it reach that point \(trainer.max_steps>=3", output,
    ), output[-2000:]  # fmt: skip


# ------------------------------------------------------------------------------------------------- wandb
class _Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit_with_config_wandb(run_dir: Path, max_epochs: int, ckpt_path: str | None = None) -> None:
    import wandb

    cfg = OmegaConf.load(CONF_DIR / "logger" / "wandb.yaml").wandb
    cfg.save_dir, cfg.group, cfg.tags, cfg.job_type = str(run_dir), "test", [], "test"
    logger = hydra.utils.instantiate(cfg)
    trainer = L.Trainer(accelerator="cpu", max_epochs=max_epochs, logger=logger, default_root_dir=run_dir,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)  # fmt: skip
    try:
        trainer.fit(_Linear(), DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2), ckpt_path=ckpt_path)
    finally:
        wandb.finish()


def _wandb_run_ids(run_dir: Path) -> list[str]:
    """The run id of each wandb session folder, read from its ``run-<id>.wandb`` file (the folder's name gets a
    ``-1`` suffix when two sessions start within the same second)."""
    return sorted(f.stem.removeprefix("run-") for f in (run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    _fit_with_config_wandb(run_a, 1)
    ckpt = next((run_a).rglob("*.ckpt"))
    _fit_with_config_wandb(run_a, 2, ckpt_path=str(ckpt))  # a requeue / ckpt_path=last in the same folder
    _fit_with_config_wandb(run_b, 1)
    ids_a = _wandb_run_ids(run_a)
    assert len(ids_a) == 2 and set(ids_a) == {wandb_run_id(run_a)}  # two sessions, one wandb run
    assert _wandb_run_ids(run_b) == [wandb_run_id(run_b)] and wandb_run_id(run_b) != wandb_run_id(run_a)

"""``hydra/launcher=slurm`` asks SLURM for GPUs only when the trainer runs on GPUs.

With ``trainer=cpu`` the launcher used to request ``--gpus-per-node=1`` and SLURM refused the job on a cluster
without GPUs ("Invalid generic resource (gres) specification"). The request is now derived from the trainer
(``${slurm_gpus:...}``, utils/resolvers.py): checked on the composed configs, and by a real job on the local
single-node cluster (no GPUs), which SLURM refused before.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from helpers import REPO, run_module
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cxr_ldm.utils import resolvers  # noqa: F401  (registers ${slurm_gpus:})

CONF = REPO / "cxr_ldm" / "conf"
SMALL = [
    "data.phantom.n_studies=60", "data.image_size=32", "data.batch_size=4", "data.phantom.raw_size=64",
    "data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1", "print_config=false",
]  # fmt: skip


def _launcher(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
    return cfg.hydra.launcher


@pytest.mark.parametrize(
    "overrides,gpus,tasks",
    [
        (["trainer=cpu"], None, 1),
        (["trainer=ddp_cpu"], None, 2),
        (["trainer=gpu"], 1, 1),
        (["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"], 4, 4),
        (["trainer=gpu", "trainer.devices=[0,1]"], 2, 2),
        (["experiment=aekl"], 1, 1),
    ],
)  # fmt: skip
def test_gpu_request_follows_the_trainer(overrides, gpus, tasks):
    launcher = _launcher(overrides)
    assert launcher.gpus_per_node == gpus
    if overrides[-1] != "trainer.devices=[0,1]":
        assert launcher.tasks_per_node == tasks


def test_devices_auto_on_gpus_is_refused_with_the_fix():
    launcher = _launcher(["trainer=gpu", "trainer.devices=auto"])
    with pytest.raises(Exception, match=r"trainer.devices=auto cannot be turned into a GPU request"):
        OmegaConf.to_container(launcher, resolve=True)


@pytest.mark.slow
def test_cpu_trainer_job_runs_on_a_cluster_without_gpus(slurm_cluster, shared_data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_module(
        "cxr_ldm.train", "-m", "hydra/launcher=slurm", "trainer=cpu", "experiment=aekl_phantom",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=null", "hydra.launcher.timeout_min=10",
        "hydra.launcher.signal_delay_s=30", f"paths.data_dir={shared_data_dir}", f"hydra.sweep.dir={sweep}", *SMALL,
        cwd=tmp_path, env=slurm_cluster["env"], timeout=600,
    )  # fmt: skip
    output = proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "gres" not in output.lower(), output
    assert proc.returncode == 0, output
    (submission,) = sweep.glob(".submitit/*/*_submission.sh")
    assert "--gpus-per-node" not in submission.read_text() and "--gres" not in submission.read_text()
    (result,) = sweep.glob(".submitit/*/*_result.pkl")
    outcome, ret = pickle.loads(result.read_bytes())
    assert outcome == "success" and isinstance(ret.return_value, float)
    assert (Path(ret.hydra_cfg.hydra.runtime.output_dir) / "checkpoints" / "last.ckpt").is_file()

"""``hydra/launcher=slurm`` asks SLURM for GPUs only when the trainer runs on GPUs.

With ``trainer=cpu`` the launcher used to request ``--gpus-per-node=1`` and SLURM refused the job on a cluster
without GPUs ("Invalid generic resource (gres) specification"). The request is now derived from the trainer
(``${slurm_gpus:...}``, utils/resolvers.py): checked here on the composed configs, and by a real job on the local
single-node cluster (no GPUs), which SLURM refused before, in ``test_scale_slurm.py`` (it shares that cluster).
"""

from __future__ import annotations

import pytest
from helpers import compose_config
from omegaconf import OmegaConf

from cxr_ldm.utils import resolvers  # noqa: F401  (registers ${slurm_gpus:})


def _launcher(overrides: list[str]):
    return compose_config("train", ["hydra/launcher=slurm", *overrides], return_hydra_config=True).hydra.launcher


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

"""What each DDP rank must share and what it must not.

* Initial weights agree: every rank seeds with ``seed`` before building the model (DDP also broadcasts rank
  zero's parameters and buffers when it wraps the module).
* Random draws differ: Lightning reseeds every rank with the same ``PL_GLOBAL_SEED`` when it sets up the
  process group (``reset_seed`` in ``DDPStrategy.setup_distributed``), which would give every rank the same
  posterior samples, diffusion noise and timesteps for its different images. :class:`cxr_ldm.callbacks.rank_seeds.RankSeeds` reseeds
  rank ``r`` with ``seed + r`` right after that (in ``setup``). DataLoader workers derive their seeds from
  the process seed, their id and the rank (Lightning's ``pl_worker_init_function``), so report excerpts
  differ too.
* Data are sharded by Lightning's ``DistributedSampler`` (``use_distributed_sampler``). Its shuffling seed
  is ``PL_GLOBAL_SEED``, which must stay the same on all ranks, or the shards overlap: it stays ``seed``.
"""

from __future__ import annotations

import logging
import sys

from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_info

log = logging.getLogger(__name__)


def fix_hydra_multirun_children(trainer: Trainer) -> bool:
    """Let Lightning's subprocess launcher start DDP children from a job of a local Hydra multirun.

    The launcher re-runs ``sys.argv`` plus ``hydra.run.dir=<HydraConfig.run.dir>``. In a multirun job that is
    the sweep command (``-m`` and every swept value) and a run folder that is not the job's, so each child
    would start a sweep of its own. Here the children get this job's overrides and its folder instead.
    Returns True when something was changed. Nothing to do under SLURM (it starts every rank itself).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
    from omegaconf import open_dict, read_write

    if not HydraConfig.initialized() or not isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        return False
    if trainer.strategy.cluster_environment.creates_processes_externally:
        return False
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return False
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    log.info("DDP children of this multirun job run in %s", hydra_cfg.runtime.output_dir)
    return True


def require_unused_parameter_detection(strategy: Strategy, who: str) -> None:
    """Let DDP tolerate parameters without gradients in a backward pass (``find_unused_parameters=True``).

    A module whose backward passes each leave some parameters without gradients (a GAN's two optimizers) would
    otherwise fail in DDP's reducer under plain ``strategy=ddp``. Call it from the module's ``setup``, i.e.
    before the strategy wraps the module in ``DistributedDataParallel``; ``who`` names the module in messages.
    """
    if not isinstance(strategy, DDPStrategy):
        return
    ddp_kwargs = getattr(strategy, "_ddp_kwargs", None)
    if not isinstance(ddp_kwargs, dict):
        raise RuntimeError(f"{who} needs DDP's unused-parameter detection: use strategy=ddp_find_unused_parameters_true")
    if not ddp_kwargs.get("find_unused_parameters", False):
        rank_zero_info(f"{who}: enabling DDP find_unused_parameters (two backward passes per step).")
        ddp_kwargs["find_unused_parameters"] = True

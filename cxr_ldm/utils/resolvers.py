"""OmegaConf resolvers shared by every entry point (registered on import, idempotently)."""

from __future__ import annotations

import os
import secrets
from typing import Any

from omegaconf import OmegaConf

GPU_ACCELERATORS = ("gpu", "cuda")


def slurm_gpus_per_node(accelerator: Any, devices: Any) -> int | None:
    """The GPUs a SLURM job asks for, per node, derived from the trainer: ``None`` (no ``--gpus-per-node``, so
    no gres request) unless the trainer runs on GPUs; then its ``devices`` (a count or a list of ids).

    ``trainer=cpu`` under ``hydra/launcher=slurm`` used to ask for GPUs anyway, and SLURM refused the job
    ("Invalid generic resource (gres) specification") on clusters without them.
    """
    if str(accelerator).lower() not in (*GPU_ACCELERATORS, "auto"):
        return None  # cpu (and mps, tpu, ...): no GPUs to request
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    text = str(devices).strip()
    if text.lstrip("-").isdigit() and int(text) > 0:
        return int(text)
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    raise ValueError(
        f"hydra/launcher=slurm: trainer.devices={devices} cannot be turned into a GPU request; set "
        f"trainer.devices=<GPUs per node> (or hydra.launcher.gpus_per_node=<n> yourself)"
    )


def register_resolvers() -> None:
    # A short random id makes run folders unique even for two runs started in the same second.
    # use_cache=True: resolved once per config; Hydra copies the cache into every multirun job's config,
    # so a sweep and its jobs agree on the value, like ${now:}.
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)
    # The launch folder, usable before Hydra sets ${hydra:runtime.cwd} (a multirun resolves its sweep folder
    # earlier than that); cached, so a sweep and its jobs agree.
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd, use_cache=True)
    # ${slurm_gpus:${trainer.accelerator},${trainer.devices}}: hydra/launcher=slurm's gpus_per_node
    if not OmegaConf.has_resolver("slurm_gpus"):
        OmegaConf.register_new_resolver("slurm_gpus", slurm_gpus_per_node)


register_resolvers()

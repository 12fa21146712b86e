"""The project's side: the LightningModule and Trainer as ``cxr_ldm.train`` composes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from cxr_ldm.models.speed import resolve_speed

from .timing import Timing, Window, WindowCallback, free, set_global_flags


class Ours:
    """The LightningModule from the composed config, fitted by the composed Trainer each round."""

    def __init__(self, name: str, cfg: Any, device: torch.device, work: Path) -> None:
        self.name, self.cfg, self.device, self.work = name, cfg, device, work
        torch.manual_seed(0)
        self.module = instantiate(cfg.model, _convert_="all")
        model = OmegaConf.to_container(cfg.model, resolve=True)
        self.speed = resolve_speed(model.get("speed"), model.get("compile"), device)

    def run(self, batches: DataLoader, window: Window) -> Timing:
        from lightning.pytorch.loggers import CSVLogger

        # the global switches as this module's first fit set them (configure_model applies them once)
        set_global_flags(self.speed.tf32, bool(self.cfg.trainer.get("benchmark") or False))
        trainer = instantiate(
            self.cfg.trainer, max_steps=window.warmup + window.steps, limit_val_batches=0, num_sanity_val_steps=0,
            enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(self.work),
            logger=CSVLogger(str(self.work), name=f"csv_{self.name}"), callbacks=[WindowCallback(window)],
            _convert_="all",
        )  # fmt: skip
        trainer.fit(self.module, train_dataloaders=batches)
        self.module.to("cpu")
        self.module._trainer = None
        del trainer
        free(self.device)
        return window.timing


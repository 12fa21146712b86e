"""Where callback pictures go: always a PNG in the run folder; TensorBoard and wandb only when allowed.

Dataset images (and reconstructions, which are close copies of them) must not leave the machine by default:
MIMIC-CXR's data use agreement forbids sharing them. Generated samples may be uploaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from cxr_ldm.utils.images import save_png

# wandb modes in which nothing leaves the machine
_LOCAL_WANDB_MODES = frozenset({"offline", "dryrun", "disabled"})


def wandb_run_uploads(run: Any) -> bool:
    """Whether a wandb run sends what it logs to a server (anything but offline/dryrun/disabled mode).

    Reads ``run.settings.mode`` (wandb >= 0.17); when it cannot be read, assumes the run uploads.
    """
    mode = getattr(getattr(run, "settings", None), "mode", None)
    return str(mode) not in _LOCAL_WANDB_MODES


def image_dir(trainer: Trainer, name: str) -> Path:
    """``<trainer.log_dir>/<name>`` (the default root dir without loggers). A collective under DDP: call on every rank."""
    return Path(trainer.log_dir or trainer.default_root_dir) / name


def write_and_log_grid(
    trainer: Trainer, grid: np.ndarray, folder: Path, tag: str, upload: bool, caption: str | None = None
) -> Path:
    """Save ``folder/epoch_XXXX.png``; log it to TensorBoard and wandb only when ``upload`` (dataset images:
    ``log_dataset_images=true``). An offline wandb run is uploaded later by ``wandb sync`` and TensorBoard
    folders get shared, so neither is a place for dataset images by default; the PNG stays on local disk."""
    path = save_png(grid, folder / f"epoch_{trainer.current_epoch:04d}.png")
    if not upload:
        return path
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, grid, global_step=trainer.global_step, dataformats="HW")
        elif isinstance(logger, WandbLogger):
            kwargs = {"caption": [caption]} if caption else {}
            logger.log_image(key=tag, images=[grid], step=trainer.global_step, **kwargs)
    return path

"""Input | reconstruction grids of the autoencoder, written every few validation epochs.

The callback keeps the first validation batch, reconstructs it with ``pl_module.reconstruct(images)`` (any
module with that method; for the autoencoder the decoded posterior mean, 0..1) under ``no_grad`` and writes
one grayscale PNG: the inputs in the top row, their reconstructions below. The PNG always goes to
``<log_dir>/reconstructions/epoch_XXXX.png``. TensorBoard gets it as an image. Weights & Biases gets it only
when the run does not upload (offline/disabled) or when ``log_dataset_images=True``: MIMIC-CXR's data use
agreement forbids sharing dataset images with third parties, and reconstructions are close copies of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image

# wandb modes in which nothing leaves the machine
_LOCAL_WANDB_MODES = frozenset({"offline", "dryrun", "disabled"})


def wandb_run_uploads(run: Any) -> bool:
    """Whether a wandb run sends what it logs to a server (anything but offline/dryrun/disabled mode).

    Reads ``run.settings.mode`` (wandb >= 0.17); when it cannot be read, assumes the run uploads.
    """
    mode = getattr(getattr(run, "settings", None), "mode", None)
    return str(mode) not in _LOCAL_WANDB_MODES


def reconstruction_grid(images: torch.Tensor, reconstructions: torch.Tensor, padding: int = 2) -> np.ndarray:
    """uint8 [2H + 3*padding, NW + (N+1)*padding] array: inputs on top, reconstructions below, white padding.

    Values are clipped to 0..1 and rounded to 0..255; multi-channel images show their first channel.
    """
    if images.shape != reconstructions.shape or images.ndim != 4:
        raise ValueError(
            f"expected two [N,C,H,W] tensors of one shape, got {images.shape} and {reconstructions.shape}"
        )
    n, _, h, w = images.shape
    grid = torch.ones(2 * h + 3 * padding, n * w + (n + 1) * padding)
    for row, batch in enumerate((images, reconstructions)):
        top = padding + row * (h + padding)
        for i in range(n):
            left = padding + i * (w + padding)
            grid[top : top + h, left : left + w] = batch[i, 0].detach().float().cpu().clamp(0.0, 1.0)
    return (grid * 255.0).round().to(torch.uint8).numpy()


class ReconstructionGridCallback(Callback):
    """Write input | reconstruction grids of the first validation batch.

    Args:
        every_n_epochs: write after every n-th validation epoch (epochs counted from 0).
        max_images: at most this many images of the batch.
        log_dataset_images: also send the grid to a wandb run that uploads (see the module docstring).
    """

    def __init__(
        self, every_n_epochs: int = 1, max_images: int = 8, log_dataset_images: bool = False
    ) -> None:
        if every_n_epochs < 1 or max_images < 1:
            raise ValueError("every_n_epochs and max_images must be >= 1")
        self.every_n_epochs = every_n_epochs
        self.max_images = max_images
        self.log_dataset_images = log_dataset_images
        self._images: torch.Tensor | None = None

    def _active(self, trainer: Trainer) -> bool:
        return not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and self._active(trainer):
            self._images = batch["image"][: self.max_images].detach()

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        images, self._images = self._images, None
        if not self._active(trainer):
            return
        out_dir = self.output_dir(trainer)  # a collective under DDP: every rank must get here
        if images is None or not trainer.is_global_zero:
            return
        with torch.no_grad():
            reconstructions = pl_module.reconstruct(images.to(pl_module.device))
        grid = reconstruction_grid(images, reconstructions)
        out_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(out_dir / f"epoch_{trainer.current_epoch:04d}.png")
        self._send_to_loggers(trainer, grid)

    @staticmethod
    def output_dir(trainer: Trainer) -> Path:
        """``<trainer.log_dir>/reconstructions`` (default root dir without loggers); call it on every rank."""
        return Path(trainer.log_dir or trainer.default_root_dir) / "reconstructions"

    def _send_to_loggers(self, trainer: Trainer, grid: np.ndarray) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    "val/reconstructions", grid, global_step=trainer.global_step, dataformats="HW"
                )
            elif isinstance(logger, WandbLogger):
                if self.log_dataset_images or not wandb_run_uploads(logger.experiment):
                    logger.log_image("val/reconstructions", [grid], step=trainer.global_step)

"""Input | reconstruction grids of the autoencoder, written every few validation epochs.

The callback keeps the first validation batch, reconstructs it with ``pl_module.reconstruct(images)`` (any
module with that method; for the autoencoder the decoded posterior mean, 0..1) under ``no_grad`` and writes
one grayscale PNG: the inputs in the top row, their reconstructions below. The PNG always goes to
``<log_dir>/reconstructions/epoch_XXXX.png``. TensorBoard and Weights & Biases (offline runs too: ``wandb sync``
uploads them later) get it only when ``log_dataset_images=True``: MIMIC-CXR's data use agreement forbids sharing
dataset images with third parties, and reconstructions are close copies of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from cxr_ldm.callbacks.schedule import validation_epoch_due
from cxr_ldm.utils.image_logging import image_dir, write_and_log_grid
from cxr_ldm.utils.images import image_grid


def reconstruction_grid(images: torch.Tensor, reconstructions: torch.Tensor, padding: int = 2) -> np.ndarray:
    """uint8 [2H + 3*padding, NW + (N+1)*padding] array: inputs on top, reconstructions below, white padding."""
    if images.shape != reconstructions.shape or images.ndim != 4:
        raise ValueError(
            f"expected two [N,C,H,W] tensors of one shape, got {images.shape} and {reconstructions.shape}"
        )
    return image_grid(torch.cat([images.cpu(), reconstructions.cpu()]), nrow=len(images), padding=padding, pad_value=1.0)


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
        return validation_epoch_due(trainer, self.every_n_epochs, from_first=True)

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
        out_dir = image_dir(trainer, "reconstructions")  # a collective under DDP: every rank must get here
        if images is None or not trainer.is_global_zero:
            return
        with torch.no_grad():
            reconstructions = pl_module.reconstruct(images.to(pl_module.device))
        grid = reconstruction_grid(images, reconstructions)
        write_and_log_grid(trainer, grid, out_dir, "val/reconstructions", upload=self.log_dataset_images)

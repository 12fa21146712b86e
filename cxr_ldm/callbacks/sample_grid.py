"""A grid of generated images at the end of validation, to watch stage 2 learn.

The prompts are a fixed list from the config, never dataset text, and the images are generated, not dataset
images: they may be written to disk and uploaded to remote loggers. Seeds are fixed too, so the grids of
successive epochs show the same noise developing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from cxr_ldm.callbacks.schedule import validation_epoch_due
from cxr_ldm.pipelines import CXRLDMPipeline
from cxr_ldm.pipelines.settings import SamplingSettings
from cxr_ldm.utils.image_logging import image_dir, write_and_log_grid
from cxr_ldm.utils.images import image_grid


class SampleGridCallback(Callback):
    """Every ``every_n_epochs`` validation epochs: ``n_per_prompt`` samples of each prompt, one row per prompt.

    Writes ``<log_dir>/samples/epoch_XXXX.png`` (rank 0 only) and logs the grid to TensorBoard / wandb loggers.
    Image ``j`` of prompt ``i`` always uses seed ``sampling.seed + i * n_per_prompt + j``; ``sampling`` holds the
    knobs of ``conf/sampling`` (None values: the model's defaults).
    """

    def __init__(
        self,
        prompts: Sequence[str],
        every_n_epochs: int = 1,
        n_per_prompt: int = 2,
        sampling: Mapping[str, Any] | None = None,
    ) -> None:
        prompts = [str(p) for p in prompts]
        if not prompts:
            raise ValueError("SampleGridCallback needs at least one prompt")
        if every_n_epochs < 1 or n_per_prompt < 1:
            raise ValueError("every_n_epochs and n_per_prompt must be >= 1")
        self.prompts = prompts
        self.every_n_epochs = every_n_epochs
        self.n_per_prompt = n_per_prompt
        self.sampling = SamplingSettings.from_config(sampling, prefix="sample_grid.sampling")

    def _due(self, trainer: Trainer) -> bool:
        return validation_epoch_due(trainer, self.every_n_epochs)  # every n epochs done, on validation epochs

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._due(trainer):
            return
        out_dir = image_dir(trainer, "samples")  # a collective under DDP: every rank must get here
        if not trainer.is_global_zero:
            return
        if not torch.isfinite(pl_module.scale_factor):
            return  # scale_factor="auto" not measured yet: nothing meaningful to decode
        prompts = [p for p in self.prompts for _ in range(self.n_per_prompt)]
        seeds = [self.sampling.seed + k for k in range(len(prompts))]
        pipe = CXRLDMPipeline.from_module(pl_module)
        images = pipe(prompts, seeds=seeds, progress=False, **self.sampling.call_kwargs())
        grid = image_grid(images, nrow=self.n_per_prompt)
        caption = " | ".join(self.prompts)
        write_and_log_grid(trainer, grid, out_dir, "samples", upload=True, caption=caption)

"""SampleGridCallback writes (and logs) a grid of the fixed prompts at the end of validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ldm_fixtures import build_ldm, make_loader, quiet_trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from cxr_ldm.callbacks.sample_grid import SampleGridCallback
from cxr_ldm.pipelines import CXRLDMPipeline
from cxr_ldm.utils.images import image_grid

pytest_plugins = ["ldm_fixtures"]

PROMPTS = ["Large right pleural effusion.", "Moderate cardiomegaly.", "No acute cardiopulmonary process."]


def test_grid_png_and_tensorboard_image(tmp_path: Path, tiny_ae_ckpt: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = build_ldm(tiny_ae_ckpt, scale_factor=0.5)
    callback = SampleGridCallback(
        PROMPTS, every_n_epochs=1, n_per_prompt=2, sampling={"steps": 2, "guidance_scale": 7.0, "seed": 3}
    )
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,  # the sanity check must not sample
        logger=logger,
        callbacks=[callback],
    )
    trainer.fit(model, train_dataloaders=make_loader(n=8), val_dataloaders=make_loader(n=4))

    path = Path(logger.log_dir) / "samples" / "epoch_0000.png"
    assert path.is_file()
    with Image.open(path) as png:
        assert png.mode == "L"
        assert png.size == (2 * (32 + 2) + 2, 3 * (32 + 2) + 2)  # one row per prompt, 2 per row, 2 px padding
        written = np.asarray(png)
    # the same images regenerated from the prompts and seeds 3..8 (image j of prompt i: seed 3 + 2 i + j)
    prompts = [p for p in PROMPTS for _ in range(2)]
    images = CXRLDMPipeline.from_module(model)(
        prompts, seeds=list(range(3, 9)), guidance_scale=7.0, num_inference_steps=2, progress=False
    )
    expected = image_grid(images, nrow=2)
    assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1

    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "samples" in events.Tags()["images"]
    logged = events.Images("samples")
    assert len(logged) == 1 and (logged[0].width, logged[0].height) == png.size


def test_samples_only_every_n_epochs(tmp_path: Path, tiny_ae_ckpt: Path):
    model = build_ldm(tiny_ae_ckpt, scale_factor=0.5)
    callback = SampleGridCallback(PROMPTS[:1], every_n_epochs=2, n_per_prompt=1, sampling={"steps": 1})
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        callbacks=[callback],
    )
    trainer.fit(model, train_dataloaders=make_loader(n=4), val_dataloaders=make_loader(n=4))
    assert not (tmp_path / "samples").exists()
    with pytest.raises(ValueError, match="at least one prompt"):
        SampleGridCallback([])


def test_grid_image_layout():
    images = torch.stack([torch.full((1, 4, 4), v) for v in (0.0, 0.5, 1.0, 0.25)])
    grid = image_grid(images, nrow=2, padding=1)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1) and grid.dtype == np.uint8
    assert grid[1, 1] == 0 and grid[1, 6] == 128 and grid[6, 1] == 255 and grid[6, 6] == 64

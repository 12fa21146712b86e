"""Reconstruction grids: PNG contents, TensorBoard images, the W&B upload gate (MIMIC data use agreement)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import wandb
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, Dataset

from cxr_ldm.callbacks.reconstruction_grid import ReconstructionGridCallback, reconstruction_grid
from cxr_ldm.models.autoencoder import AutoencoderKLModule
from cxr_ldm.utils.image_logging import wandb_run_uploads

SIZE, PAD = 32, 2


class _Images(Dataset):
    """Smooth 0..1 images (horizontal ramps with a random offset) in dict batches."""

    def __init__(self, n: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        ramp = torch.linspace(0.0, 1.0, SIZE).expand(SIZE, SIZE)
        self.images = torch.stack(
            [((ramp + torch.rand(1, generator=generator)) % 1.0)[None] for _ in range(n)]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "text": ""}


def _module() -> AutoencoderKLModule:
    autoencoder = {
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [8, 16],
        "latent_channels": 3,
        "num_res_blocks": 1,
        "attention_levels": [False, False],
        "with_encoder_nonlocal_attn": False,
        "with_decoder_nonlocal_attn": False,
        "norm_num_groups": 8,
    }
    discriminator = {"spatial_dims": 2, "in_channels": 1, "channels": 8, "num_layers_d": 2}
    return AutoencoderKLModule(autoencoder, discriminator, perceptual_weight=0.0, adv_start=100)


def _fit(
    tmp_path: Path, callback: ReconstructionGridCallback, epochs: int, logger: Any = False, n_val: int = 6
):
    L.seed_everything(0)
    module = _module()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        default_root_dir=tmp_path,
        logger=logger,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
        log_every_n_steps=1,
    )
    val_loader = DataLoader(_Images(n_val, seed=1), batch_size=4)
    trainer.fit(module, DataLoader(_Images(4), batch_size=2), val_loader)
    return trainer, module, val_loader.dataset.images


def _tiles(grid: np.ndarray, row: int, count: int) -> list[np.ndarray]:
    top = PAD + row * (SIZE + PAD)
    return [
        grid[top : top + SIZE, PAD + i * (SIZE + PAD) : PAD + i * (SIZE + PAD) + SIZE] for i in range(count)
    ]


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def test_grid_layout_and_values() -> None:
    images = torch.rand(3, 1, SIZE, SIZE)
    reconstructions = torch.rand(3, 1, SIZE, SIZE) * 1.4 - 0.2  # out of range values get clipped
    grid = reconstruction_grid(images, reconstructions, padding=PAD)
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * SIZE + 3 * PAD, 3 * SIZE + 4 * PAD)
    for row, batch in enumerate((images, reconstructions)):
        for tile, expected in zip(_tiles(grid, row, 3), _to_uint8(batch), strict=True):
            np.testing.assert_array_equal(tile, expected)
    assert (grid[:PAD] == 255).all() and (grid[:, :PAD] == 255).all()  # white padding
    with pytest.raises(ValueError):
        reconstruction_grid(images, reconstructions[:2])


def test_png_per_epoch_and_tensorboard_image(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb")
    callback = ReconstructionGridCallback(every_n_epochs=1, max_images=3, log_dataset_images=True)
    trainer, module, val_images = _fit(tmp_path, callback, epochs=2, logger=logger)

    out_dir = Path(logger.log_dir) / "reconstructions"
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "epoch_0000.png",
        "epoch_0001.png",
    ]  # no sanity-check grid
    grid = np.asarray(Image.open(out_dir / "epoch_0001.png"))
    assert grid.shape == (2 * SIZE + 3 * PAD, 3 * SIZE + 4 * PAD)
    # first validation batch, first 3 images; the last grid shows the final weights' posterior-mean
    # reconstructions
    with torch.no_grad():
        expected_reconstructions = module.autoencoder.decode(module.autoencoder.encode(val_images[:3])[0])
    for tile, expected in zip(_tiles(grid, 0, 3), _to_uint8(val_images[:3]), strict=True):
        np.testing.assert_array_equal(tile, expected)
    for tile, expected in zip(_tiles(grid, 1, 3), _to_uint8(expected_reconstructions), strict=True):
        assert np.abs(tile.astype(int) - expected.astype(int)).max() <= 1  # rounding of float noise

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    logged = events.Images("val/reconstructions")
    assert [event.step for event in logged] == [trainer.global_step // 2, trainer.global_step]
    assert (logged[-1].height, logged[-1].width) == grid.shape


def test_every_n_epochs(tmp_path: Path) -> None:
    callback = ReconstructionGridCallback(every_n_epochs=2, max_images=8)
    _fit(tmp_path, callback, epochs=3, n_val=2)
    out_dir = tmp_path / "reconstructions"  # no logger: the default root dir
    assert sorted(p.name for p in out_dir.iterdir()) == ["epoch_0000.png", "epoch_0002.png"]
    grid = np.asarray(Image.open(out_dir / "epoch_0002.png"))
    assert grid.shape == (2 * SIZE + 3 * PAD, 2 * SIZE + 3 * PAD)  # the batch has only 2 images


@pytest.mark.parametrize(
    ("mode", "uploads"),
    [("online", True), ("shared", True), ("offline", False), ("dryrun", False), ("disabled", False)],
)
def test_wandb_upload_gate_reads_the_run_mode(mode: str, uploads: bool) -> None:
    run = SimpleNamespace(settings=wandb.Settings(mode=mode))  # the attribute of a wandb Run the gate reads
    assert wandb_run_uploads(run) is uploads


def test_wandb_upload_gate_assumes_upload_when_unknown() -> None:
    assert wandb_run_uploads(object()) is True


def test_dataset_images_reach_no_logger_by_default(tmp_path: Path) -> None:
    """Offline wandb runs are synced later and TensorBoard folders get shared: only the local PNG is written."""
    logger = TensorBoardLogger(tmp_path, name="tb")
    _fit(tmp_path, ReconstructionGridCallback(max_images=2), epochs=1, logger=logger)
    assert (Path(logger.log_dir) / "reconstructions" / "epoch_0000.png").is_file()
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == []


@pytest.mark.parametrize("allowed", [False, True], ids=["default", "log_dataset_images"])
def test_offline_wandb_run_gets_the_grid_only_when_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allowed: bool
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")  # also restores what WandbLogger writes into WANDB_MODE
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=str(tmp_path), project="cxr-ldm-test")
    try:
        assert wandb_run_uploads(logger.experiment) is False
        _fit(tmp_path, ReconstructionGridCallback(max_images=2, log_dataset_images=allowed), epochs=1, logger=logger)
    finally:
        wandb.finish()
    media = list(tmp_path.glob("wandb/offline-run-*/files/media/images/val/reconstructions_*.png"))
    assert (tmp_path / "reconstructions" / "epoch_0000.png").exists()  # WandbLogger's save_dir is the log dir
    if not allowed:
        assert media == []
        return
    assert len(media) == 1
    assert np.asarray(Image.open(media[0])).shape[:2] == (2 * SIZE + 3 * PAD, 2 * SIZE + 3 * PAD)

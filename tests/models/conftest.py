"""Fixtures for the model tests: tiny networks, 32 px blob images in dict batches, an offline torch cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torchvision
from helpers import TINY_AUTOENCODER
from torch.utils.data import DataLoader, Dataset

TINY_DISCRIMINATOR = {"spatial_dims": 2, "in_channels": 1, "channels": 8, "num_layers_d": 2}


class BlobDataset(Dataset):
    """Smooth random Gaussian blobs in 0..1, as the data module's dict batches (image, tokens, text)."""

    def __init__(self, n: int = 8, size: int = 32, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        axis = torch.linspace(-1.0, 1.0, size)
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        images = []
        for _ in range(n):
            image = torch.zeros(size, size)
            for _ in range(3):
                cy, cx = (torch.rand(2, generator=generator) * 1.4 - 0.7).tolist()
                radius = 0.15 + 0.3 * torch.rand(1, generator=generator).item()
                amplitude = 0.3 + 0.7 * torch.rand(1, generator=generator).item()
                image += amplitude * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
            images.append((image / max(1.0, image.max().item()))[None])
        self.images = torch.stack(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "tokens": torch.zeros(77, dtype=torch.long), "text": ""}


@pytest.fixture
def blob_loader() -> Callable[..., DataLoader]:
    """``blob_loader(n=8, batch_size=2, size=32, seed=0)``: an unshuffled loader, no worker processes."""

    def make(n: int = 8, batch_size: int = 2, size: int = 32, seed: int = 0) -> DataLoader:
        return DataLoader(BlobDataset(n, size, seed), batch_size=batch_size, shuffle=False, num_workers=0)

    return make


@pytest.fixture
def module_kwargs() -> dict[str, Any]:
    """Tiny AutoencoderKLModule arguments; no perceptual term (tests of it bring their own weights)."""
    return {
        "autoencoder": dict(TINY_AUTOENCODER),
        "discriminator": dict(TINY_DISCRIMINATOR),
        "perceptual_weight": 0.0,
        "adv_start": 0,
    }


@pytest.fixture
def make_trainer(tmp_path: Path) -> Iterator[Callable[..., L.Trainer]]:
    """A CPU Trainer factory with quiet defaults; undoes ``deterministic=True``'s global switch afterwards."""
    deterministic_before = torch.are_deterministic_algorithms_enabled()

    def make(**overrides: Any) -> L.Trainer:
        options: dict[str, Any] = {
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": tmp_path,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
        }
        options.update(overrides)
        return L.Trainer(**options)

    yield make
    torch.use_deterministic_algorithms(deterministic_before)


@pytest.fixture
def offline_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``$TORCH_HOME`` for the test, and torch.hub downloads turned into errors."""
    torch_home = tmp_path / "torch_home"
    torch_home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored after the test, whatever a test sets

    def no_download(url: str, *args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return torch_home


@pytest.fixture
def squeezenet_weights() -> dict[str, torch.Tensor]:
    """A torchvision squeezenet1_1 state dict with random weights, in the format of the released file."""
    torch.manual_seed(1234)
    return {k: v.clone() for k, v in torchvision.models.squeezenet1_1(weights=None).state_dict().items()}


@pytest.fixture
def cached_squeezenet(offline_torch_home: Path, squeezenet_weights: dict[str, torch.Tensor]) -> Path:
    """The random backbone where torchvision looks: ``$TORCH_HOME/hub/checkpoints/squeezenet1_1-...``."""
    path = offline_torch_home / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"
    path.parent.mkdir(parents=True)
    torch.save(squeezenet_weights, path)
    return path

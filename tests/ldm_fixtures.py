"""Shared fixtures of the stage-2 tests: a real tiny stage-1 checkpoint and a trained tiny LDM checkpoint.

Registered as a pytest plugin by the test modules (``pytest_plugins = ["ldm_fixtures"]``; ``tests/`` is on
``sys.path`` through the root conftest, as for ``helpers``), so session
fixtures are built once per run. Tiny nets: 32 px images, AE (8, 16, 16) -> 3 x 8 x 8 latents, the
``ldm_small`` UNet and the tiny random text encoder. The test modules also import its helpers, so it is
imported before pytest could rewrite its asserts (it has none): PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import TINY_AUTOENCODER, compose_config
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, Dataset

from cxr_ldm.data.tokenization import tokenize

os.environ.setdefault("HF_HUB_OFFLINE", "1")

IMAGE_SIZE = 32
AE_ARCH = dict(TINY_AUTOENCODER)
TINY_TEXT_CFG = {"width": 64, "heads": 4, "layers": 3}  # conf/text_encoder/tiny.yaml
TEXTS = ["Large right pleural effusion.", "", "No acute cardiopulmonary process.", "Moderate cardiomegaly."]


class TinyCXRDataset(Dataset):
    """Batches shaped like the DataModule's: ``image`` [1, S, S] in 0..1, ``tokens`` [77], ``text``."""

    def __init__(self, n: int = 8, size: int = IMAGE_SIZE, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        images = []
        for _ in range(n):
            cx, cy, r = torch.rand(3, generator=gen) * torch.tensor([1.0, 1.0, 0.5]) - torch.tensor(
                [0.5, 0.5, -0.3]
            )
            blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (r**2))
            images.append((0.2 + 0.6 * blob + 0.05 * torch.rand(size, size, generator=gen)).clamp(0, 1))
        self.images = torch.stack(images)[:, None]
        self.texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
        self.tokens = tokenize(self.texts)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "tokens": self.tokens[i], "text": self.texts[i]}


def full_clip_state_dict(seed: int = 123) -> dict[str, torch.Tensor]:
    """A whole open_clip CLIP (tiny vision + the tiny text tower): the key naming of real checkpoint files."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    vision = CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32)
    model = CLIP(embed_dim=32, vision_cfg=vision, text_cfg=CLIPTextCfg(**TINY_TEXT_CFG))
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def make_loader(n: int = 8, batch_size: int = 4, seed: int = 0) -> DataLoader:
    return DataLoader(TinyCXRDataset(n, seed=seed), batch_size=batch_size, shuffle=False, num_workers=0)


def quiet_trainer(root: Path, **kwargs: Any) -> Trainer:
    defaults = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(root),
        "num_sanity_val_steps": 0,
    }
    return Trainer(**{**defaults, **kwargs})


def ldm_config(autoencoder_ckpt: Path | str, **overrides: Any) -> dict[str, Any]:
    """``conf/model/ldm_small.yaml`` composed by Hydra, as plain kwargs of ``LatentDiffusionModule``."""
    from omegaconf import OmegaConf

    cfg = compose_config(None, ["+model=ldm_small", f"model.autoencoder_ckpt={autoencoder_ckpt}"])
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    for key in ("_target_", "_recursive_"):
        kwargs.pop(key)
    kwargs.update(overrides)
    return kwargs


def build_ldm(autoencoder_ckpt: Path | str, **overrides: Any):
    from cxr_ldm.models.diffusion import LatentDiffusionModule

    torch.manual_seed(0)
    return LatentDiffusionModule(**ldm_config(autoencoder_ckpt, **overrides))


@pytest.fixture(scope="session")
def tiny_ae_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real stage-1 checkpoint: ``AutoencoderKLModule`` fitted for 2 steps by a Trainer and saved."""
    from cxr_ldm.models.autoencoder import AutoencoderKLModule

    root = tmp_path_factory.mktemp("aekl")
    torch.manual_seed(0)
    module = AutoencoderKLModule(
        autoencoder=AE_ARCH,
        discriminator={"spatial_dims": 2, "in_channels": 1, "channels": 8, "num_layers_d": 1},
        perceptual_weight=0.0,
    )
    trainer = quiet_trainer(root, max_steps=2, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=make_loader())
    path = root / "aekl.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def trained_ldm_ckpt(tmp_path_factory: pytest.TempPathFactory, tiny_ae_ckpt: Path) -> Path:
    """A tiny LDM trained for 3 steps whose stage-1 file is deleted afterwards (the LDM must not need it)."""
    root = tmp_path_factory.mktemp("ldm")
    ae_copy = root / "aekl_copy.ckpt"
    shutil.copy(tiny_ae_ckpt, ae_copy)
    model = build_ldm(ae_copy, scale_factor_batches=2, image_size=IMAGE_SIZE)
    trainer = quiet_trainer(root, max_steps=3, limit_val_batches=1)
    trainer.fit(model, train_dataloaders=make_loader(n=12), val_dataloaders=make_loader(n=4))
    path = root / "ldm.ckpt"
    trainer.save_checkpoint(path)
    ae_copy.unlink()
    return path


@pytest.fixture(scope="session")
def phantom32(phantom_prepared) -> Path:
    """Phantom studies prepared at 32 px (the tiny LDM's size); the prepared folder knows its ground truth."""
    return phantom_prepared(n_studies=120, raw_size=64, size=32)


@pytest.fixture(scope="session")
def jittered_ckpt(tmp_path_factory: pytest.TempPathFactory, trained_ldm_ckpt: Path) -> Path:
    """``trained_ldm_ckpt`` with jittered UNet weights, as a checkpoint file.

    MONAI zero-initialises the attention output projections, so after 3 training steps the text barely moves
    the prediction and guidance would be untestable; the jitter makes the output depend on the prompt.
    """
    ckpt = torch.load(trained_ldm_ckpt, map_location="cpu", weights_only=True)
    gen = torch.Generator().manual_seed(0)
    for key, value in ckpt["state_dict"].items():
        if key.startswith(("unet.", "ema.module.")) and value.is_floating_point():
            ckpt["state_dict"][key] = value + 0.05 * torch.randn(value.shape, generator=gen)
    path = tmp_path_factory.mktemp("jittered") / "ldm.ckpt"
    torch.save(ckpt, path)
    return path

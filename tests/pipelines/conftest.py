"""Fixtures of the pipeline tests: the tiny trained LDM with jittered UNet weights, as a checkpoint file.

MONAI zero-initialises the attention output projections, so after 3 training steps the text barely moves the
prediction and guidance would be untestable; the jitter makes the output depend on the prompt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
pytest_plugins = ["ldm_fixtures"]


@pytest.fixture(scope="session")
def jittered_ckpt(tmp_path_factory: pytest.TempPathFactory, trained_ldm_ckpt: Path) -> Path:
    ckpt = torch.load(trained_ldm_ckpt, map_location="cpu", weights_only=True)
    gen = torch.Generator().manual_seed(0)
    for key, value in ckpt["state_dict"].items():
        if key.startswith(("unet.", "ema.module.")) and value.is_floating_point():
            ckpt["state_dict"][key] = value + 0.05 * torch.randn(value.shape, generator=gen)
    path = tmp_path_factory.mktemp("jittered") / "ldm.ckpt"
    torch.save(ckpt, path)
    return path

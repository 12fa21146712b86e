"""Helpers shared by test modules (import as ``from helpers import run_module``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The smallest stage-1 network the tests train (norm groups of 8 for channels below 32).
TINY_AUTOENCODER = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": [8, 16, 16],
    "latent_channels": 3,
    "num_res_blocks": 1,
    "attention_levels": [False, False, False],
    "with_encoder_nonlocal_attn": False,
    "with_decoder_nonlocal_attn": False,
    "norm_num_groups": 8,
}


def run_module(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 600):
    """Run ``python -m module args`` as a user would; returns the CompletedProcess."""
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    if env:
        full_env.update(env)
    full_env = {k: v for k, v in full_env.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )

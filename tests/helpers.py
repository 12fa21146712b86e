"""Helpers shared by test modules (import as ``from helpers import run_module``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_module(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 600):
    """Run ``python -m module args`` as a user would; returns the CompletedProcess."""
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    if env:
        full_env.update(env)
    full_env = {k: v for k, v in full_env.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )

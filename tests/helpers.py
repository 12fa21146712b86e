"""Helpers shared by test modules (import as ``from helpers import run_module``)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"  # train, prepare, phantom and the groups (model/, trainer/, debug/tiny ...)
INFERENCE_CONF_DIR = CONF_DIR / "inference"  # sample, evaluate, app, demo, export (their model= is no group)

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


def hydra_context(inference: bool = False):
    """Hydra initialised on ``conf/`` (``conf/inference/`` when ``inference``), as a context manager: for code
    that composes again inside (the train command's override type check does)."""
    from hydra import initialize_config_dir

    return initialize_config_dir(config_dir=str(INFERENCE_CONF_DIR if inference else CONF_DIR), version_base="1.3")


def compose_config(name: str | None, overrides: Iterable[str] = (), *, inference: bool = False,
                   return_hydra_config: bool = False) -> DictConfig:  # fmt: skip
    """The config ``name`` composed by Hydra from ``conf/`` (``conf/inference/`` when ``inference``) with
    ``overrides``, as its command would; ``name=None`` composes groups only (e.g. ``["+model=ldm_small"]``)."""
    from hydra import compose

    with hydra_context(inference):
        return compose(config_name=name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def run_module(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 600):
    """Run ``python -m module args`` as a user would; returns the CompletedProcess."""
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    if env:
        full_env.update(env)
    full_env = {k: v for k, v in full_env.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def command_exit(command: str, *args: str) -> SystemExit:
    """How ``python -m cxr_ldm.<command> args`` ends when Hydra cannot compose its config, run in this process
    (fast: nothing runs past the composition). Restores ``sys.argv`` and Hydra's global state."""
    import importlib

    import pytest
    from hydra.core.global_hydra import GlobalHydra

    module = "cxr_ldm.phantom.__main__" if command == "phantom" else f"cxr_ldm.{command}"
    main = importlib.import_module(module).main
    argv = sys.argv
    sys.argv = [module, *args]
    try:
        with pytest.raises(SystemExit) as ended:
            main()
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    return ended.value


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[bool]:
    """A small tmpfs mounted at ``path`` while the block runs (root only), so that a test can fill a disk; yields
    False where none can be mounted (``CXR_LDM_TEST_NO_TMPFS=1`` asks for that), and ``path`` is a plain folder."""
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount") is not None and not os.environ.get("CXR_LDM_TEST_NO_TMPFS"):
        path.mkdir(parents=True, exist_ok=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                 capture_output=True).returncode == 0  # fmt: skip
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], capture_output=True)


def checkpoint_differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two checkpoint values differ (tensors bit for bit, NaN equal to NaN); ``[]`` when equal."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and torch.equal(torch.nan_to_num(a, 7.0), torch.nan_to_num(b, 7.0)))  # fmt: skip
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys {sorted(map(str, a.keys() ^ b.keys()))}"]
        return [d for k in a for d in checkpoint_differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{where} length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in checkpoint_differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]

"""Suite-wide settings: nothing may reach the network, and runs share one small phantom data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """``paths.data_dir`` for end-to-end runs: phantom data are generated there once, on first use."""
    return tmp_path_factory.mktemp("cxr_data")

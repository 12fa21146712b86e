"""What a training run's terminal leaves out: Lightning's tips and, outside a SLURM allocation, the srun hint."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

import lightning as L
import pytest

from cxr_ldm.utils.lightning_noise import quiet_lightning


@pytest.fixture
def srun_on_path(tmp_path, monkeypatch):
    """A machine with SLURM installed: an ``srun`` executable on the PATH (never run)."""
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}:{os.environ['PATH']}")
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)


def _build_trainer(tmp_path, caplog, quiet: bool = False) -> tuple[list[str], list[str]]:
    """Messages (warnings, log records) of building a Trainer with the defaults that log the tips."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning recorded, but for what quiet_lightning drops
        with quiet_lightning() if quiet else contextlib.nullcontext(), caplog.at_level(logging.INFO):
            L.Trainer(accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False)
    return [str(w.message) for w in caught], [r.getMessage() for r in caplog.records]


def test_lightning_says_them_without_the_filter(tmp_path, caplog, srun_on_path):
    said, logged = _build_trainer(tmp_path, caplog)
    assert any("The `srun` command is available" in m for m in said)
    assert any(m.startswith("💡 Tip:") for m in logged)


def test_outside_slurm_they_are_dropped_and_the_rest_stays(tmp_path, caplog, srun_on_path):
    said, logged = _build_trainer(tmp_path, caplog, quiet=True)
    assert not any("srun" in m for m in said)
    assert not any(m.startswith("💡 Tip:") for m in logged)
    assert any(m.startswith("GPU available:") for m in logged)  # what a user wants to know stays


def test_inside_an_allocation_the_srun_hint_stays(tmp_path, caplog, srun_on_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    said, _ = _build_trainer(tmp_path, caplog, quiet=True)
    assert any("The `srun` command is available" in m for m in said)


def test_the_filter_ends_with_the_block(tmp_path, caplog, srun_on_path):
    _build_trainer(tmp_path, caplog, quiet=True)
    caplog.clear()
    said, logged = _build_trainer(tmp_path, caplog)
    assert any("srun" in m for m in said) and any(m.startswith("💡 Tip:") for m in logged)

"""``run_info.json``: what ran, where, with which code and libraries, and when it started and ended.

Every run folder gets one, written by global rank zero when the command starts and rewritten (atomically) when
it ends. Its top level describes the latest start of the run; a resumed or requeued run keeps the earlier starts
under ``previous_sessions`` (a session without ``ended`` was killed). Fields:

``command`` (the command line, ``argv`` as the shell passed it), ``overrides`` (Hydra's), ``cwd``, ``git``
(``commit``, ``dirty``; or ``"not a git checkout"``), ``versions`` (python, torch, lightning, monai, hydra,
cxr_ldm), ``cuda`` (torch's CUDA build, whether a GPU is visible), ``gpus`` (names), ``seed`` and
``rank_seeds`` (what each rank draws from, ``utils/distributed.py``), ``world_size``, ``host``, ``slurm``
(job id and restart count when under SLURM), ``ckpt_path`` (what it resumed from), ``started`` and ``ended``
(ISO 8601, UTC), ``status`` (``running``, ``finished``, ``interrupted`` or ``failed: <error>``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from cxr_ldm.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

FILE_NAME = "run_info.json"
NOT_A_CHECKOUT = "not a git checkout"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "lightning": _version("lightning"),
        "monai": _version("monai"),
        "hydra": _version("hydra-core"),
        "cxr_ldm": _version("cxr-ldm"),
    }


def git_state(source: Path | None = None) -> dict[str, Any] | str:
    """``{"commit", "dirty"}`` of the checkout the code runs from, or ``"not a git checkout"``."""
    source = source or Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (source / ".git").exists():
        return NOT_A_CHECKOUT
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=20, check=True).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=20).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return NOT_A_CHECKOUT
    return {"commit": commit, "dirty": bool(status.strip())}


def gpu_names() -> list[str]:
    """GPU names without initialising CUDA in this process (``nvidia-smi``; torch's once CUDA is up)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=30)  # fmt: skip
            if out.returncode == 0:
                return [line.strip() for line in out.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    return []


def _cuda() -> dict[str, Any]:
    import torch

    return {"build": torch.version.cuda, "available": bool(torch.cuda.is_available())}


def _slurm() -> dict[str, Any] | None:
    if "SLURM_JOB_ID" not in os.environ:
        return None
    return {"job_id": os.environ.get("SLURM_JOB_ID"), "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0) or 0)}


class RunInfo:
    """``<run folder>/run_info.json``, kept up to date by the process of global rank zero."""

    def __init__(self, run_dir: str | Path, enabled: bool = True) -> None:
        self.path = Path(run_dir) / FILE_NAME
        self.enabled = enabled
        self.data: dict[str, Any] = {}

    @classmethod
    def start(cls, run_dir: str | Path, seed: int | None, overrides: list[str] | None = None,
              enabled: bool = True) -> RunInfo:  # fmt: skip
        info = cls(run_dir, enabled)
        if not enabled:
            return info
        previous = info._read()
        sessions = list(previous.pop("previous_sessions", []))
        if previous:
            if previous.get("ended") is None:
                previous["status"] = "killed (no end recorded)"
            sessions.append(previous)
        info.data = {
            "command": [sys.executable, "-m", "cxr_ldm.train", *sys.argv[1:]],
            "overrides": list(overrides or []),
            "cwd": os.getcwd(),
            "git": git_state(),
            "versions": library_versions(),
            "cuda": _cuda(),
            "gpus": gpu_names(),
            "seed": seed,
            "rank_seeds": None if seed is None else [seed],
            "world_size": 1,
            "host": socket.gethostname(),
            "slurm": _slurm(),
            "ckpt_path": None,
            "started": _now(),
            "ended": None,
            "status": "running",
            "previous_sessions": sessions,
        }
        info.write()
        return info

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def update(self, **fields: Any) -> None:
        if self.enabled:
            self.data.update(fields)
            self.write()

    def finish(self, status: str) -> None:
        if not self.enabled or not self.data:
            return
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.data["gpus"] = gpu_names()
        self.data.update(ended=_now(), status=status)
        self.write(quiet=True)

    def write(self, quiet: bool = False) -> None:
        try:
            atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n", what="run record")
        except OSError as err:
            if not quiet:
                raise
            log.warning("could not update %s: %s", self.path, err)  # the run's own error matters more

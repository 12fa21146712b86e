"""A real single-node SLURM cluster for the tests of this folder (scripts/slurm/cluster.sh).

The packages are installed with apt when missing (as root); where that is impossible the SLURM tests are
skipped with the reason. The cluster lives in its own state folder and ports, is started once per test module
and stopped by PID at its end, also when tests fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import REPO

CLUSTER = REPO / "scripts" / "slurm" / "cluster.sh"
COMMANDS = ("slurmctld", "slurmd", "slurmdbd", "munged", "sbatch", "sacct", "mariadbd")


def _missing() -> list[str]:
    return [c for c in COMMANDS if shutil.which(c) is None]


def _free_port_base(count: int = 4) -> int:
    """A base port with ``count`` free ports after it (slurmctld, slurmd, slurmdbd, MariaDB)."""
    for base in range(17817, 27817, 10):
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports for the test cluster")


def _ensure_packages() -> str | None:
    """None when SLURM is usable, else why not."""
    if not _missing():
        return None
    if os.geteuid() != 0:
        return f"SLURM packages missing ({', '.join(_missing())}) and not root to install them"
    proc = subprocess.run(["bash", str(CLUSTER), "install"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or _missing():
        return f"SLURM packages could not be installed: {(proc.stderr or proc.stdout).strip()[-500:]}"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    """``{"env": {...SLURM_CONF...}, "state": Path}`` of a running cluster, stopped after the test module."""
    reason = _ensure_packages()
    if reason:
        print(f"\nSKIP SLURM tests: {reason}")
        pytest.skip(reason)
    state = Path(tempfile.mkdtemp(prefix="cxr-ldm-slurm-", dir="/tmp"))
    state.chmod(0o755)  # munged and MariaDB run as their own users and must reach their folders
    env = dict(os.environ, CXR_SLURM_STATE=str(state), CXR_SLURM_PORT=str(_free_port_base()))
    try:
        proc = subprocess.run(
            ["bash", str(CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=180
        )
        if proc.returncode != 0:
            logs = "\n".join(
                f"== {p.name}\n{p.read_text()[-1500:]}" for p in sorted((state / "log").glob("*"))
            )
            pytest.fail(f"cluster.sh start failed:\n{proc.stderr}\n{logs}")
        yield {"env": {"SLURM_CONF": str(state / "etc" / "slurm.conf")}, "state": state}
    finally:
        stop = subprocess.run(
            ["bash", str(CLUSTER), "stop"], env=env, capture_output=True, text=True, timeout=180
        )
        alive = [
            p.name for p in (state / "pids").glob("*") if Path(f"/proc/{p.read_text().strip()}").exists()
        ]
        assert stop.returncode == 0 and not alive, f"cluster not stopped: {alive} {stop.stderr}"
        shutil.rmtree(state, ignore_errors=True)

"""Driving a real ``python -m cxr_ldm.train`` from a fault test: start it, hold it at a fault point
(``fault_points.py``), signal it, and compare what it leaves with an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from helpers import checkpoint_differences as differences  # noqa: F401 (the fault tests' name for it)

HERE = Path(__file__).parent


def env() -> dict[str, str]:
    out = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    return out


def train_args(run: list[str], data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cxr_ldm.train", *run, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}",
            *extra]  # fmt: skip


def fault(marker: Path, at: str, **options) -> list[str]:
    args = ["+callbacks.fault._target_=fault_points.FaultPoint", f"+callbacks.fault.marker_dir={marker}",
            f"+callbacks.fault.at={at}"]  # fmt: skip
    return args + [f"+callbacks.fault.{k}={v}" for k, v in options.items()]


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def interrupt(args: list[str], cwd: Path, marker: Path, sig: signal.Signals, timeout: float = 600,
              group: bool = False) -> tuple[int, str]:  # fmt: skip
    """Start the run, wait until the fault point holds it, send ``sig`` (to its whole process group with
    ``group``: every DDP rank, as a dead node); returns (exit status, output)."""
    log_path = cwd / f"{marker.name}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(args, cwd=cwd, env=env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=group)  # fmt: skip
        deadline = time.time() + timeout
        try:
            while not any(marker.glob("*")):
                if proc.poll() is not None:
                    raise AssertionError(f"run ended ({proc.returncode}) before the fault point:\n"
                                         + log_path.read_text()[-3000:])  # fmt: skip
                if time.time() > deadline:
                    raise AssertionError("the fault point was not reached in time")
                time.sleep(0.2)
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
                proc.wait()
    return code, log_path.read_text()


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # a complete file, loadable as users load it


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = load(a)["state_dict"], load(b)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def metrics_rows(run_dir: Path) -> pd.DataFrame:
    """metrics.csv without its wall-clock columns, rows in the order written."""
    frame = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return frame.drop(columns=[c for c in frame.columns if "time" in c or "/sec" in c or "per_sec" in c])

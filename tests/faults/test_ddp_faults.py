"""DDP faults (issue 19): a NaN/Inf loss on one rank, and a rank that dies or hangs, on two real gloo ranks.

Real ``python -m cxr_ldm.train`` runs of stage 1 (``debug=tiny``, ``trainer=ddp_cpu``, 3 steps). ``fault_points.py``
puts the NaN into one rank's batch (``at=nan_batch rank=1``), or holds rank 1 at the start of a step
(``at=batch_start rank=1``) for the test to SIGKILL (a dead rank) or SIGSTOP (a hung rank: its connections stay
open, as with a node that went away or a rank stuck in I/O).

* A NaN on rank 1 only stops every rank at that step (or, with ``nonfinite.action=skip``, every rank skips it):
  one message, from rank 0, naming rank 1, the step and rank 1's ``dicom_id``s; every rank exits with status 1.
  Started by Lightning's launcher (rank 0 starts rank 1) and by an outside launcher (torchrun, SLURM: the test
  starts both ranks), where each rank's exit status can be seen.
* A rank killed, or hung, makes rank 0 stop with one line within ``ddp_timeout_s`` (plus start-up), exit status 1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
RUN = [
    "experiment=aekl_phantom", "debug=tiny", "trainer=ddp_cpu", "data.batch_size=4",
    "callbacks.reconstruction_grid.every_n_epochs=100", "callbacks.model_checkpoint.monitor=null",
]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    return env


def _args(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cxr_ldm.train", *RUN, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}",
            *extra]  # fmt: skip


def _fault(marker: Path, at: str, **options) -> list[str]:
    args = ["+callbacks.fault._target_=fault_points.FaultPoint", f"+callbacks.fault.marker_dir={marker}",
            f"+callbacks.fault.at={at}"]  # fmt: skip
    return args + [f"+callbacks.fault.{k}={v}" for k, v in options.items()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def _status(run: Path) -> str:
    return json.loads((run / "run_info.json").read_text())["status"]


def test_nan_on_one_rank_stops_every_rank_at_that_step_with_one_message(tmp_path, shared_data_dir):
    """Lightning's launcher: rank 0 starts rank 1; the command's exit status is rank 0's."""
    run, marker = tmp_path / "run", tmp_path / "marker"
    done = subprocess.run(_args(shared_data_dir, run, *_fault(marker, "nan_batch", step=1, rank=1)), cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    ids = (marker / "nan_batch.rank1").read_text().split()
    assert done.returncode == 1, done.stderr[-4000:]
    errors = _errors(done.stderr)
    assert len(errors) == 1, done.stderr[-4000:]
    assert errors[0].startswith(f"error: non-finite training loss (nan) on rank 1 of 2 at step 1 (epoch 0, batch 1; "
                                f"dicom_id {', '.join(ids)}); every rank stopped at that step; ")  # fmt: skip
    assert "Traceback" not in done.stderr and "Connection closed" not in done.stderr
    assert _status(run).startswith("failed: NonFiniteLossError: non-finite training loss (nan) on rank 1 of 2")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False) \
        if (run / "checkpoints" / "last.ckpt").exists() else None  # fmt: skip
    assert ckpt is None or ckpt["global_step"] < 1


def test_nan_on_one_rank_under_an_outside_launcher_every_rank_exits_1(tmp_path, shared_data_dir):
    """torchrun / SLURM start every rank: both exit with status 1, one message (rank 0's) in all their output."""
    run, marker, port = tmp_path / "run", tmp_path / "marker", str(_free_port())
    procs = []
    for rank in (0, 1):
        env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                   NODE_RANK="0")  # fmt: skip
        extra = [] if rank == 0 else [f"hydra.output_subdir=.rank{rank}_hydra"]
        procs.append(subprocess.Popen(_args(shared_data_dir, run, *extra, *_fault(marker, "nan_batch", step=2, rank=1)),
                                      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))  # fmt: skip
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    everything = "\n".join(out + err for out, err in outputs)
    assert [p.returncode for p in procs] == [1, 1], everything[-6000:]
    errors = _errors(everything)
    assert len(errors) == 1 and errors == _errors(outputs[0][1]), everything[-6000:]
    ids = (marker / "nan_batch.rank1").read_text().split()
    assert errors[0].startswith(f"error: non-finite training loss (nan) on rank 1 of 2 at step 2 (epoch 0, batch 2; "
                                f"dicom_id {', '.join(ids)})")  # fmt: skip
    assert "Traceback" not in everything


def test_skip_on_one_rank_skips_that_step_on_every_rank(tmp_path, shared_data_dir):
    run, marker = tmp_path / "run", tmp_path / "marker"
    done = subprocess.run(_args(shared_data_dir, run, "nonfinite.action=skip", *_fault(marker, "nan_batch", step=1, rank=1)),
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    ids = (marker / "nan_batch.rank1").read_text().split()
    skips = [line for line in (done.stdout + done.stderr).splitlines() if "batch skipped" in line]
    assert len(skips) == 1, skips
    assert f"non-finite training loss (nan) on rank 1 of 2 at step 1 (epoch 0, batch 1; dicom_id {', '.join(ids)}): " \
           "batch skipped (1 so far)" in skips[0]  # fmt: skip
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
    guard = next(v for k, v in ckpt["callbacks"].items() if k.startswith("NonFiniteGuard"))
    assert guard["skipped"] == [{"step": 1, "epoch": 0, "rank": 1, "dicom_id": ids}]
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def _hold_rank_1(tmp_path: Path, data_dir: Path, timeout_s: int) -> tuple[subprocess.Popen, int, Path]:
    """Start the run; returns it (rank 0, the launcher), rank 1's pid once rank 1 waits at step 1, its log."""
    marker, log = tmp_path / "marker", tmp_path / "run.log"
    args = _args(data_dir, tmp_path / "run", f"ddp_timeout_s={timeout_s}",
                 *_fault(marker, "batch_start", step=1, rank=1, seconds=600))  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not (marker / "batch_start.rank1").exists():
        assert proc.poll() is None, log.read_text()[-4000:]
        assert time.time() < deadline, "rank 1 did not reach step 1"
        time.sleep(0.2)
    time.sleep(0.5)  # the pid is written before the pause
    return proc, int((marker / "batch_start.rank1").read_text()), log


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_a_dead_or_hung_rank_stops_the_others_within_the_timeout(tmp_path, shared_data_dir, fault):
    timeout_s = 15
    proc, rank1, log = _hold_rank_1(tmp_path, shared_data_dir, timeout_s)
    try:
        os.kill(rank1, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        start = time.time()
        code = proc.wait(timeout=timeout_s + 60)
        took = time.time() - start
    finally:
        for pid in (proc.pid, rank1):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    output = log.read_text()
    assert code == 1, output[-4000:]
    errors = _errors(output)
    assert len(errors) == 1, output[-4000:]
    assert errors[0].startswith("error: rank 0 of 2 lost the other ranks at step 1 ")
    assert ("it died" if fault == "killed" else f"did not answer within ddp_timeout_s={timeout_s} s") in errors[0]
    assert "Traceback" not in output
    if fault == "hung":
        assert timeout_s - 5 < took < timeout_s + 30, took
    assert _status(tmp_path / "run").startswith("failed: DDPRankLostError")

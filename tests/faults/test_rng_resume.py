"""Resume under DDP is exact per rank: each rank gets its own RNG states back, in stage 1 and stage 2.

Lightning builds a checkpoint on every rank and writes rank zero's, so RNG states stored by the module were
rank zero's on every rank after a resume (all ranks then drew the same noise). Two real gloo ranks fit each
stage for 2 epochs, checkpointing after epoch 0; a second fit, seeded as train.py seeds, resumes from
that checkpoint. Each rank's RNG state at every batch of epoch 1, and the final weights, must equal the
uninterrupted fit's, and the two ranks' states must differ.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest_plugins = ["ldm_fixtures"]
WORKER = Path(__file__).with_name("rng_resume_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, tiny_ae_ckpt) -> list[dict]:
    out = tmp_path_factory.mktemp("rng_resume")
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", RANK=str(rank),
                   LOCAL_RANK=str(rank), NODE_RANK="0", OMP_NUM_THREADS="1")  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), str(tiny_ae_ckpt)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ae", "ldm"])
def test_each_rank_resumes_its_own_random_stream(ranks, stage):
    for rank, result in enumerate(ranks):
        r = result[stage]
        epoch1 = [state for epoch, state in r["full"] if epoch == 1]
        resumed = [state for epoch, state in r["resumed"]]
        assert len(epoch1) == len(resumed) == 2 and all(epoch == 1 for epoch, _ in r["resumed"])
        for k, (a, b) in enumerate(zip(epoch1, resumed, strict=True)):
            assert torch.equal(a, b), f"{stage}: rank {rank} batch {k} of the resumed epoch drew other numbers"
        assert r["full_steps"] == r["resumed_steps"] == 4
        for key, value in r["full_final"].items():
            assert torch.allclose(value.double(), r["resumed_final"][key].double(), atol=1e-6, equal_nan=True), (
                f"{stage}: rank {rank} {key} differs after resume"
            )
    zero, one = ranks[0][stage]["resumed"], ranks[1][stage]["resumed"]
    assert not any(torch.equal(a, b) for (_, a), (_, b) in zip(zero, one, strict=True)), "ranks share noise"

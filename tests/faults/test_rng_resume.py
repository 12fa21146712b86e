"""Resume under DDP is exact per rank: each rank gets its own RNG states back, in stage 1 and stage 2.

Lightning builds a checkpoint on every rank and writes rank zero's, so RNG states stored by the module were
rank zero's on every rank after a resume (all ranks then drew the same noise). Two real gloo ranks fit stage 1
for 2 epochs (the worker takes stage 2 too: ``rng_resume_worker.py OUT AE_CKPT ae,ldm``), checkpointing after epoch 0; a second fit, seeded as train.py seeds, resumes from
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
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), str(tiny_ae_ckpt), "ae"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ae"])  # both stages share utils/rng.py; stage 2's hooks: the tests below
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


# ----------------------------------------------------------------------------- one process, three moments
def _single_fit(stage: str, ae_ckpt, root: Path, max_steps: int, ckpt_path: str | None = None, **checkpointing):
    import lightning as L
    from ldm_fixtures import make_loader, quiet_trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from rng_resume_worker import RngProbe, build

    L.seed_everything(7, verbose=False)
    probe = RngProbe()
    callbacks = [probe]
    if checkpointing:
        callbacks.append(ModelCheckpoint(dirpath=root, save_top_k=-1, filename="{step}", **checkpointing))
    trainer = quiet_trainer(root, max_steps=max_steps, callbacks=callbacks, enable_checkpointing=bool(checkpointing),
                            num_sanity_val_steps=1)  # fmt: skip
    module = build(stage, str(ae_ckpt))
    train = make_loader(n=8, batch_size=2)
    train = torch.utils.data.DataLoader(train.dataset, batch_size=2, shuffle=True)  # draws from the global RNG
    trainer.fit(module, train, make_loader(n=2, batch_size=2, seed=1), ckpt_path=ckpt_path)
    return trainer, module, probe


@pytest.fixture(scope="module")
def full_fit(tmp_path_factory, tiny_ae_ckpt):
    """``full_fit(stage)``: the uninterrupted 8-step fit each moment is compared with, run once per stage (it is
    seeded, so it is the same fit for every moment)."""
    fits = {}

    def get(stage: str):
        if stage not in fits:
            fits[stage] = _single_fit(stage, tiny_ae_ckpt, tmp_path_factory.mktemp(f"full_{stage}"), 8)
        return fits[stage]

    return get


@pytest.mark.parametrize("stage", ["ae", "ldm"])
@pytest.mark.parametrize("moment", ["mid_epoch", "epoch_end", "after_fit"])
def test_resume_draws_what_the_uninterrupted_run_draws(tmp_path, tiny_ae_ckpt, full_fit, stage, moment):
    """8 steps at once == 8 steps with a checkpoint at step 6 (mid-epoch: every_n_train_steps), at step 4
    (ModelCheckpoint at an epoch's end) or after a fit stopped at step 4, then resumed to 8: the same random
    draws in every step, and (at epoch boundaries, where the resumed epoch sees the same images) the same
    weights. The loader shuffles, so its sampler draws from the global RNG too."""
    sys.path.insert(0, str(WORKER.parent))
    torch.set_num_threads(1)
    full_trainer, full, full_probe = full_fit(stage)
    if moment == "after_fit":
        half, _, _ = _single_fit(stage, tiny_ae_ckpt, tmp_path / "half", 4)
        ckpt, at = tmp_path / "half.ckpt", 4
        half.save_checkpoint(ckpt)
    else:
        options = {"every_n_train_steps": 3} if moment == "mid_epoch" else {"every_n_epochs": 1}
        _single_fit(stage, tiny_ae_ckpt, tmp_path / "ckpts", 8, **options)
        at = 6 if moment == "mid_epoch" else 4
        ckpt = tmp_path / "ckpts" / f"step={at}.ckpt"
    resumed_trainer, resumed, probe = _single_fit(stage, tiny_ae_ckpt, tmp_path / "resumed", 8, str(ckpt))
    assert resumed_trainer.global_step == full_trainer.global_step == 8
    expected = full_probe.states[at:]
    assert len(probe.states) == len(expected) == 8 - at
    for k, ((_, a), (_, b)) in enumerate(zip(expected, probe.states, strict=True)):
        assert torch.equal(a, b), f"step {at + k}: the resumed run drew other numbers"
    if moment == "mid_epoch":
        return  # Lightning restarts a plain DataLoader's epoch: other images, the same draws (utils/rng.py)
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key

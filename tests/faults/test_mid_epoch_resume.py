"""A run SIGKILLed in the middle of an epoch and resumed with ``ckpt_path=last`` ends where the uninterrupted run
ends: the same weights, optimizer state, RNG streams and metrics rows, bit for bit, in both stages, on one
process and under two gloo DDP ranks.

Each run trains 2 epochs of 4 steps with a checkpoint every 3 steps (``every_n_train_steps``, the periodic
checkpoint of a long epoch): the checkpoints at steps 3 and 6 are both mid-epoch. The killed run is held at the
start of step 7 (``fault_points.py``) and SIGKILLed (under DDP the whole process group, as a dead node), so
the newest checkpoint is step 6's, in epoch 1 with two batches to go. What makes the resume exact: the
training DataLoader is torchdata's ``StatefulDataLoader``, whose position (and sampler order) Lightning keeps
in the checkpoint, the dataset's draws are a function of the seed, epoch and item (``cxr_ldm/data/dataset.py``)
and the loaders never draw from the global RNG; the model's RNG states are restored per rank (``utils/rng.py``).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import run_harness as harness

from cxr_ldm.utils.checkpoints import resolve_ckpt_path
from cxr_ldm.utils.rng import RNG_KEY

pytestmark = pytest.mark.slow

COMMON = [
    "debug=tiny", "data.batch_size=4", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
    "callbacks.model_checkpoint.monitor=null", "callbacks.model_checkpoint.save_top_k=-1",
    "callbacks.model_checkpoint.every_n_train_steps=3", "callbacks.model_checkpoint.filename='step_{step:03d}'",
]  # fmt: skip
STAGE = {
    "stage1": ["experiment=aekl_phantom", "callbacks.reconstruction_grid.every_n_epochs=100"],
    "stage2": ["experiment=ldm_phantom", "callbacks.sample_grid.every_n_epochs=100"],
}
DDP = ["trainer=ddp_cpu", "trainer.devices=2"]
TRAINING_STATE = ("state_dict", "optimizer_states", "lr_schedulers", RNG_KEY, "global_step", "epoch")


def _stage1_ckpt(tmp_path_factory, data_dir: Path) -> Path:
    """A stage-1 checkpoint for stage 2's runs (a tiny autoencoder trained 2 steps by the command)."""
    tmp = tmp_path_factory.mktemp("stage1_for_stage2")
    done = harness.run(harness.train_args(["experiment=aekl_phantom", "debug=tiny", "trainer.max_steps=2"],
                                          data_dir, tmp / "run"), cwd=tmp)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory, shared_data_dir) -> Path:
    return _stage1_ckpt(tmp_path_factory, shared_data_dir)


def _options(stage: str, ddp: bool, autoencoder: Path) -> list[str]:
    extra = [f"model.autoencoder_ckpt={autoencoder}"] if stage == "stage2" else []
    return [*STAGE[stage], *COMMON, *extra, *(DDP if ddp else [])]


def _reference_killed_resumed(options: list[str], tmp_path: Path, data_dir: Path, kill_at_step: int,
                              ddp: bool = False) -> tuple[Path, Path, dict]:
    """The uninterrupted run, and the same run SIGKILLed at the start of ``kill_at_step`` (under DDP the whole
    process group) then resumed with ``ckpt_path=last``; returns both run folders and the checkpoint the
    resume started from. Asserts that the final checkpoints agree in every part of the training state."""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    done = harness.run(harness.train_args(options, data_dir, reference), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    marker = tmp_path / "marker"
    code, output = harness.interrupt(
        harness.train_args(options, data_dir, killed, *harness.fault(marker, "batch_start", step=kill_at_step)),
        tmp_path, marker, signal.SIGKILL, group=ddp,
    )  # fmt: skip
    assert code == -signal.SIGKILL, output[-3000:]
    newest = harness.load(Path(resolve_ckpt_path("last", killed)))
    resumed = harness.run(harness.train_args(options, data_dir, killed, "ckpt_path=last"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in (killed / "train.log").read_text()
    expected, final = harness.load(reference / "checkpoints" / "last.ckpt"), harness.load(killed / "checkpoints" / "last.ckpt")
    assert final["global_step"] == expected["global_step"] == 8
    for key in TRAINING_STATE:
        assert harness.differences(final[key], expected[key], key) == [], key
    return reference, killed, newest


@pytest.mark.parametrize(("stage", "ddp"), [("stage1", False), ("stage2", False), ("stage1", True), ("stage2", True)],
                         ids=["stage1", "stage2", "stage1-ddp", "stage2-ddp"])  # fmt: skip
def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(stage, ddp, tmp_path, shared_data_dir,
                                                                    autoencoder):  # fmt: skip
    options = _options(stage, ddp, autoencoder)
    reference, killed, newest = _reference_killed_resumed(options, tmp_path, shared_data_dir, 7, ddp)
    assert (newest["global_step"], newest["epoch"]) == (6, 1)  # mid-epoch: batch 2 of 4 of epoch 1 is next
    assert newest["loops"]["fit_loop"]["state_dict"].get("combined_loader"), "no DataLoader state was saved"
    for name in ("step_003.ckpt", "step_006.ckpt"):  # written before the kill, by the same run: equal as well
        assert harness.same_weights(killed / "checkpoints" / name, reference / "checkpoints" / name)
    rows, expected_rows = harness.metrics_rows(killed), harness.metrics_rows(reference)
    assert rows.columns.tolist() == expected_rows.columns.tolist()
    assert rows.fillna(-1).values.tolist() == expected_rows.fillna(-1).values.tolist()


def test_a_resume_at_an_epoch_end_with_persistent_workers_equals_the_uninterrupted_run(tmp_path, shared_data_dir,
                                                                                      autoencoder):  # fmt: skip
    """One persistent DataLoader worker (``data/mimic.yaml``'s setting): the uninterrupted run's worker lives on
    into epoch 1 while the resumed run starts a new one, so the draws of epoch 1 (excerpts, unconditional
    prompts) must not depend on the worker's history: they are a function of the seed, epoch and item."""
    options = [
        *STAGE["stage2"], "debug=tiny", "data.batch_size=4", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
        "data.num_workers=1", "data.persistent_workers=true", "callbacks.model_checkpoint.monitor=null",
        "callbacks.model_checkpoint.save_top_k=-1",
        "callbacks.model_checkpoint.filename='epoch_{epoch:02d}'", f"model.autoencoder_ckpt={autoencoder}",
    ]  # fmt: skip
    _, _, newest = _reference_killed_resumed(options, tmp_path, shared_data_dir, 5)
    assert (newest["global_step"], newest["epoch"]) == (4, 0)  # resumed from the end of epoch 0

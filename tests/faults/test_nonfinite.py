"""A NaN/Inf loss: stop (naming the step, the batch's dicom_ids and the last good checkpoint) or skip; never a
checkpoint with NaN weights over a good one. Real tiny stage-1 and stage-2 modules, a real Trainer, real files;
the NaN comes from a corrupted batch (a NaN pixel), as a broken image would bring it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import TINY_AUTOENCODER
from ldm_fixtures import TinyCXRDataset, build_ldm
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from cxr_ldm.callbacks.nonfinite import NonFiniteGuard, NonFiniteLossError, NonFiniteWeightsError
from cxr_ldm.models.autoencoder import AutoencoderKLModule
from cxr_ldm.utils.checkpoints import AtomicCheckpointIO

pytest_plugins = ["ldm_fixtures"]


class _WithIds(TinyCXRDataset):
    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**super().__getitem__(i), "dicom_id": f"dcm-{i:03d}"}


class _Corrupt(L.Callback):
    """A NaN pixel in the batch of ``step``; records that batch's ids and the weights around that step."""

    def __init__(self, step: int) -> None:
        self.step, self.ids, self.before, self.after = step, [], None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            batch["image"][0, 0, 0, 0] = float("nan")
            self.ids = list(batch["dicom_id"])
            self.before = {k: v.detach().clone() for k, v in pl_module.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.before is not None and self.after is None:
            self.after = {k: v.detach().clone() for k, v in pl_module.named_parameters()}


def _ae() -> AutoencoderKLModule:
    torch.manual_seed(0)
    disc = {"spatial_dims": 2, "in_channels": 1, "channels": 8, "num_layers_d": 1}
    return AutoencoderKLModule(TINY_AUTOENCODER, disc, perceptual_weight=0.0, adv_start=0)


def _fit(module, root: Path, guard: NonFiniteGuard, corrupt: _Corrupt, max_epochs: int = 3):
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=-1, filename="{epoch}")
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, callbacks=[guard, corrupt, checkpoint], plugins=[AtomicCheckpointIO()],
        limit_val_batches=0,
    )  # fmt: skip
    loader = DataLoader(_WithIds(8), batch_size=4, shuffle=False)  # 2 steps an epoch
    return trainer, checkpoint, loader


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_stop_names_the_step_the_batch_and_the_last_good_checkpoint(tmp_path):
    torch.set_num_threads(1)
    module, corrupt = _ae(), _Corrupt(step=3)
    trainer, checkpoint, loader = _fit(module, tmp_path, NonFiniteGuard("stop"), corrupt)
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.fit(module, loader)
    message = str(raised.value)
    good = tmp_path / "checkpoints" / "last.ckpt"
    assert message.startswith("non-finite training loss (nan) at step 3 (epoch 1, batch 1; dicom_id dcm-004, dcm-005, "
                              "dcm-006, dcm-007)")  # fmt: skip
    assert corrupt.ids == ["dcm-004", "dcm-005", "dcm-006", "dcm-007"]
    assert f"the last good checkpoint is {good}" in message and "nonfinite.action=skip" in message
    saved = torch.load(good, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2 and _finite(saved["state_dict"])
    # nothing was trained on the NaN batch: the weights are those it started with
    for name, value in module.named_parameters():
        assert torch.equal(value.detach(), corrupt.before[name]), name
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch=0.ckpt", "last.ckpt"]


@pytest.mark.parametrize("stage", ["ae", "ldm"])
def test_skip_leaves_the_weights_of_that_step_alone_and_goes_on(tmp_path, tiny_ae_ckpt, stage):
    torch.set_num_threads(1)
    module = _ae() if stage == "ae" else build_ldm(tiny_ae_ckpt, scale_factor=0.5, image_size=32)
    guard, corrupt = NonFiniteGuard("skip"), _Corrupt(step=3)
    trainer, checkpoint, loader = _fit(module, tmp_path, guard, corrupt)
    trainer.fit(module, loader)
    assert trainer.global_step == 6
    assert guard.skipped == [{"step": 3, "epoch": 1, "dicom_id": ["dcm-004", "dcm-005", "dcm-006", "dcm-007"]}]
    trained = [k for k, v in module.named_parameters() if v.requires_grad]
    assert all(torch.equal(corrupt.before[k], corrupt.after[k]) for k in trained)  # the skipped step changed nothing
    for path in (tmp_path / "checkpoints").glob("*.ckpt"):
        assert _finite(torch.load(path, map_location="cpu", weights_only=True)["state_dict"]), path
    assert _finite(dict(module.named_parameters()))


def test_more_skips_than_allowed_stop_the_run(tmp_path):
    module = _ae()
    trainer, _, loader = _fit(module, tmp_path, NonFiniteGuard("skip", max_skips=0), _Corrupt(step=1))
    with pytest.raises(NonFiniteLossError, match=r"more than nonfinite.max_skips=0 batches skipped, the last at step 1"):
        trainer.fit(module, loader)


def test_a_checkpoint_with_nan_weights_is_never_written_over_a_good_one(tmp_path):
    module, guard = _ae(), NonFiniteGuard("stop")
    trainer, checkpoint, loader = _fit(module, tmp_path, guard, _Corrupt(step=-1), max_epochs=1)
    trainer.fit(module, loader)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with torch.no_grad():
        next(module.autoencoder.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteWeightsError, match=rf"weights hold NaN/Inf \(autoencoder\.\S+\); the last good checkpoint, {last}, is kept"):
        trainer.save_checkpoint(last)
    assert last.read_bytes() == before and not list(last.parent.glob(".*.tmp"))


def test_options_are_checked():
    with pytest.raises(ValueError, match="nonfinite.action must be stop or skip, got 'ignore'"):
        NonFiniteGuard("ignore")


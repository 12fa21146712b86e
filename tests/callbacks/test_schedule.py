"""One "is this a validation epoch for me" rule for the periodic callbacks, checked against a real Trainer.

A callback may only act (and a metric it logs only exists) on epochs that Lightning validates. The probe
records, at every real ``on_validation_epoch_end``, what the FID, reconstruction-grid and sample-grid
callbacks decide; the decisions must fall on validation epochs and match the documented schedule.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from ldm_fixtures import build_ldm, make_loader, quiet_trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from cxr_ldm.callbacks.fid import FIDCallback
from cxr_ldm.callbacks.reconstruction_grid import ReconstructionGridCallback
from cxr_ldm.callbacks.sample_grid import SampleGridCallback
from cxr_ldm.callbacks.schedule import validation_epoch_due

pytest_plugins = ["ldm_fixtures"]


class _Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _Probe(L.Callback):
    def __init__(self, every_n_epochs: int) -> None:
        self.callbacks = {
            "fid": FIDCallback(every_n_epochs=every_n_epochs),
            "reconstruction_grid": ReconstructionGridCallback(every_n_epochs=every_n_epochs),
            "sample_grid": SampleGridCallback(["Moderate cardiomegaly."], every_n_epochs=every_n_epochs),
        }
        self.validated: list[int] = []
        self.due: dict[str, list[int]] = {name: [] for name in self.callbacks}
        self.sanity_decisions: list[bool] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        decisions = {
            "fid": self.callbacks["fid"]._due(trainer),
            "reconstruction_grid": self.callbacks["reconstruction_grid"]._active(trainer),
            "sample_grid": self.callbacks["sample_grid"]._due(trainer),
        }
        if trainer.sanity_checking:
            self.sanity_decisions += decisions.values()
            return
        self.validated.append(trainer.current_epoch)
        for name, due in decisions.items():
            if due:
                self.due[name].append(trainer.current_epoch)


def _run(tmp_path: Path, check_val_every_n_epoch: int, every_n_epochs: int, max_epochs: int) -> _Probe:
    probe = _Probe(every_n_epochs)
    data = DataLoader(TensorDataset(torch.randn(2, 2)), batch_size=2)
    trainer = quiet_trainer(
        tmp_path, max_epochs=max_epochs, check_val_every_n_epoch=check_val_every_n_epoch,
        num_sanity_val_steps=1, callbacks=[probe],
    )  # fmt: skip
    trainer.fit(_Linear(), data, data)
    return probe


@pytest.mark.parametrize(
    "check_val,every,max_epochs,from_first,rest",
    [
        # experiment=ldm: validation every 10 epochs, the FID callback every 5 (the review's case)
        (10, 5, 30, [9, 19, 29], [9, 19, 29]),
        (1, 2, 6, [0, 2, 4], [1, 3, 5]),  # validation every epoch: the schedules as before
        (1, 1, 3, [0, 1, 2], [0, 1, 2]),
        (3, 5, 15, [2, 8, 14], [5, 11, 14]),  # the first validation on/after each multiple of 5 epochs
        (2, 4, 8, [1, 5], [3, 7]),
    ],
)  # fmt: skip
def test_every_callback_acts_on_validation_epochs_only(tmp_path, check_val, every, max_epochs, from_first, rest):
    probe = _run(tmp_path, check_val, every, max_epochs)
    assert probe.validated == [e for e in range(max_epochs) if (e + 1) % check_val == 0]  # Lightning's rule
    assert probe.due["fid"] == probe.due["reconstruction_grid"] == from_first
    assert probe.due["sample_grid"] == rest
    assert set(from_first) <= set(probe.validated) and set(rest) <= set(probe.validated)
    assert from_first[0] == probe.validated[0]  # a monitored FID exists from the first validation on
    assert not any(probe.sanity_decisions)


def test_the_rule_is_stateless_so_a_resumed_run_acts_on_the_same_epochs(tmp_path):
    """Decisions depend on the epoch only: a fresh Trainer resumed at epoch 10 decides as the first did."""
    first = _run(tmp_path / "a", 10, 5, 30)
    trainer = quiet_trainer(tmp_path / "b", max_epochs=30, check_val_every_n_epoch=10)
    decided = []
    for epoch in range(30):
        trainer.fit_loop.epoch_progress.current.completed = epoch  # what a checkpoint restores
        if (epoch + 1) % 10 == 0 and validation_epoch_due(trainer, 5, from_first=True):
            decided.append(epoch)
    assert decided == first.due["fid"]
    with pytest.raises(ValueError, match="every_n_epochs"):
        validation_epoch_due(trainer, 0)


@pytest.mark.slow
def test_fid_is_logged_and_monitorable_when_validation_is_every_second_epoch(
    tmp_path: Path, tiny_ae_ckpt: Path
):
    """check_val_every_n_epoch=2 with the FID every 2 epochs: before the shared rule val/fid never existed
    (validation at epoch 1, FID at epochs 0, 2, ...) and ModelCheckpoint(monitor="val/fid") failed."""
    torch.set_num_threads(1)
    model = build_ldm(tiny_ae_ckpt, scale_factor=0.5, image_size=32)
    callback = FIDCallback(every_n_epochs=2, n_samples=4, sampling={"steps": 1}, batch_size=4, allow_random_xrv=True,
                           adherence=False)  # fmt: skip
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/fid", mode="min", save_top_k=1)
    logger = CSVLogger(str(tmp_path), name="csv")
    trainer = quiet_trainer(
        tmp_path, max_epochs=2, check_val_every_n_epoch=2, limit_train_batches=1, limit_val_batches=1,
        logger=logger, callbacks=[callback, checkpoint], enable_checkpointing=True,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=make_loader(n=4), val_dataloaders=make_loader(n=4))
    logged = pd.read_csv(Path(logger.log_dir) / "metrics.csv").dropna(subset=["val/fid"])
    assert logged["epoch"].tolist() == [1]
    assert Path(checkpoint.best_model_path).is_file()
    assert float(checkpoint.best_model_score) == pytest.approx(float(logged["val/fid"].iloc[0]), rel=1e-6)

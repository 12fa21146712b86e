"""metrics.csv survives ckpt_path=last: the rows of earlier epochs stay, rows past the checkpoint are replaced.

Lightning's CSVLogger deletes metrics.csv when its folder is not empty, so a resumed run kept only its own
rows. The logger of ``conf/logger/csv.yaml`` keeps them. Real Trainer, real checkpoints, real files.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import pandas as pd
import torch
from helpers import CONF_DIR
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset


class _Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _csv_logger(run_dir: Path):
    """The logger ``logger=csv`` builds (``conf/logger/csv.yaml``)."""
    cfg = OmegaConf.load(CONF_DIR / "logger" / "csv.yaml").csv
    cfg.save_dir = str(run_dir)
    return hydra.utils.instantiate(cfg)


def _fit(run_dir: Path, max_epochs: int, ckpt_path: str | None = None) -> None:
    L.seed_everything(0, verbose=False)
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=max_epochs, logger=_csv_logger(run_dir), log_every_n_steps=1,
        callbacks=[ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="{epoch}", save_top_k=-1, save_last=True)],
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=run_dir,
    )  # fmt: skip
    trainer.fit(_Linear(), data, data, ckpt_path=ckpt_path)


def _rows(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "csv" / "metrics.csv")


def test_resume_keeps_the_rows_of_earlier_epochs(tmp_path):
    _fit(tmp_path, max_epochs=2)
    before = _rows(tmp_path)
    _fit(tmp_path, max_epochs=4, ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt"))
    after = _rows(tmp_path)
    val = after.dropna(subset=["val/loss"])
    assert val["epoch"].tolist() == [0, 1, 2, 3]  # one validation row per epoch, none lost, none doubled
    assert after["step"].is_monotonic_increasing
    pd.testing.assert_frame_equal(after.iloc[: len(before)][before.columns], before)  # earlier rows unchanged


def test_rows_written_after_the_checkpoint_are_replaced_by_the_resumed_run(tmp_path):
    """A run that went on past the checkpoint it is resumed from (killed later): its later rows are the
    resumed run's to write; they are not kept twice."""
    _fit(tmp_path, max_epochs=4)
    first = _rows(tmp_path)
    _fit(tmp_path, max_epochs=4, ckpt_path=str(tmp_path / "checkpoints" / "epoch=1.ckpt"))
    after = _rows(tmp_path)
    assert after.dropna(subset=["val/loss"])["epoch"].tolist() == [0, 1, 2, 3]
    assert after["step"].is_monotonic_increasing and len(after) == len(first)
    # the same training replayed from the checkpoint logs the same numbers (epoch boundary, no shuffling)
    pd.testing.assert_frame_equal(after, first)


def test_a_row_cut_off_by_a_kill_is_dropped(tmp_path):
    _fit(tmp_path, max_epochs=1)
    path = tmp_path / "csv" / "metrics.csv"
    path.write_text(path.read_text() + "0,0.1")  # half a row, no newline: what a SIGKILL mid-write leaves
    _fit(tmp_path, max_epochs=2, ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt"))
    rows = _rows(tmp_path)
    assert rows.dropna(subset=["val/loss"])["epoch"].tolist() == [0, 1]
    assert rows["step"].notna().all()

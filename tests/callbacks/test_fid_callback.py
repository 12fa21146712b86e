"""FIDCallback: FID / KID / phantom adherence of a fixed sample, every k validation epochs, monitorable."""

from __future__ import annotations

from pathlib import Path

import hydra
import pandas as pd
import pytest
import torch
from helpers import compose_config
from ldm_fixtures import build_ldm, quiet_trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from cxr_ldm.callbacks.fid import FIDCallback
from cxr_ldm.data.datamodule import CXRDataModule
from cxr_ldm.metrics.features import XRVWeightsError
from cxr_ldm.metrics.fid import fid_from_features
from cxr_ldm.pipelines import CXRLDMPipeline

pytest_plugins = ["ldm_fixtures"]



@pytest.fixture()
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions on 2 shared cores: one thread is many times faster
    yield
    torch.set_num_threads(before)


def datamodule(data_dir: Path) -> CXRDataModule:
    return CXRDataModule(str(data_dir), image_size=32, batch_size=4, num_workers=0, pin_memory=False,
                         persistent_workers=False)  # fmt: skip


def test_logged_every_k_epochs_equal_to_a_direct_computation_and_monitorable(
    tmp_path: Path, tiny_ae_ckpt: Path, phantom32: Path, single_thread
):
    model = build_ldm(tiny_ae_ckpt, scale_factor=0.5, image_size=32)
    callback = FIDCallback(
        every_n_epochs=2, n_samples=4, sampling={"steps": 2, "seed": 10}, batch_size=4, allow_random_xrv=True,
        cache_dir=str(tmp_path / "cache"), phantom_classifier={"n_train": 128, "n_val": 32, "epochs": 1},
    )  # fmt: skip
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/fid", mode="min", save_top_k=1)
    logger = CSVLogger(str(tmp_path), name="csv")
    trainer = quiet_trainer(
        tmp_path, max_epochs=3, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=1,
        logger=logger, callbacks=[callback, checkpoint], enable_checkpointing=True,
    )  # fmt: skip
    dm = datamodule(phantom32)
    trainer.fit(model, datamodule=dm)

    logged = pd.read_csv(Path(logger.log_dir) / "metrics.csv")
    rows = logged.dropna(subset=["val/fid"])
    assert sorted(rows["epoch"].tolist()) == [0, 2]  # the first validation epoch, then every 2nd
    assert rows["val/kid"].notna().all()
    assert rows["val/adherence"].between(0, 1).all()  # phantom data: adherence is on
    assert list((tmp_path / "cache" / "classifiers").glob("phantom_classifier_32px_*.pt"))

    # the epoch-2 value: FID of the first 4 validation images against their prompts' samples (seeds 10-13),
    # with the weights the run ended with (no training step follows the last validation)
    batch = next(iter(dm.val_dataloader()))
    images = CXRLDMPipeline.from_module(model)(list(batch["text"]), seeds=[10, 11, 12, 13], guidance_scale=7.0,
                                               num_inference_steps=2, progress=False)  # fmt: skip
    expected = fid_from_features(
        callback.extractor(batch["image"]).numpy(), callback.extractor(images).numpy()
    )
    assert float(rows.loc[rows["epoch"] == 2, "val/fid"].iloc[0]) == pytest.approx(expected, rel=1e-4)
    assert float(checkpoint.best_model_score) == pytest.approx(rows["val/fid"].min(), rel=1e-6)
    assert Path(checkpoint.best_model_path).is_file()


def test_missing_weights_stop_the_run_before_training(
    tmp_path: Path, tiny_ae_ckpt: Path, phantom32: Path, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty torchxrayvision cache
    model = build_ldm(tiny_ae_ckpt, scale_factor=0.5, image_size=32)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                            callbacks=[FIDCallback(n_samples=2)])  # fmt: skip
    with pytest.raises(XRVWeightsError, match="allow_random_xrv"):
        trainer.fit(model, datamodule=datamodule(phantom32))
    assert trainer.global_step == 0


def test_config_group_composes_with_the_ldm_callbacks():
    cfg = compose_config("train", ["experiment=ldm_phantom", "callbacks=[ldm,fid]", "callbacks.fid.allow_random_xrv=true",
                                   "optimized_metric=val/fid", "optimized_mode=min"])  # fmt: skip
    assert {"sample_grid", "fid", "model_checkpoint"} <= set(cfg.callbacks)
    assert cfg.callbacks.model_checkpoint.monitor == "val/fid"
    callback = hydra.utils.instantiate(cfg.callbacks.fid)
    assert isinstance(callback, FIDCallback) and callback.allow_random_xrv and callback.every_n_epochs == 5
    with pytest.raises(ValueError, match="adherence"):
        FIDCallback(adherence="sometimes")

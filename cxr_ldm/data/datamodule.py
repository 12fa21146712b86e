"""``CXRDataModule``: batches of images, report excerpts and their tokens from a prepared folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning import LightningDataModule
from torch.utils.data import DataLoader

from cxr_ldm.data.bootstrap import ensure_phantom_prepared
from cxr_ldm.data.dataset import PreparedSplit
from cxr_ldm.data.excerpts import ExcerptSampler
from cxr_ldm.tokenization import CONTEXT_LENGTH


class CXRDataModule(LightningDataModule):
    """Train / validate / test splits of a folder written by ``cxr_ldm.prepare``.

    Batches are dicts: ``image`` [B, 1, S, S] float 0..1, ``tokens`` [B, 77] (OpenCLIP, 0-padded),
    ``text`` (the excerpt, "" for the unconditional share), ``dicom_id``. Training excerpts are random;
    validation and test excerpts are fixed by ``seed``. ``phantom`` (a dict of
    :func:`~cxr_ldm.data.bootstrap.ensure_phantom_prepared` arguments) builds the data on first use.
    """

    def __init__(
        self,
        data_dir: str,
        image_size: int = 512,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        p_uncond: float = 0.1,
        min_sentences: int = 1,
        max_sentences: int = 5,
        augment: dict | None = None,
        context_length: int = CONTEXT_LENGTH,
        seed: int = 0,
        drop_last: bool = True,
        phantom: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.data_dir = Path(data_dir)
        self.excerpt = ExcerptSampler(min_sentences, max_sentences, p_uncond)
        self.splits: dict[str, PreparedSplit] = {}

    def prepare_data(self) -> None:
        # Runs on one process per node before setup: the place to build the phantom data on first use.
        if self.hparams.phantom:
            ensure_phantom_prepared(self.data_dir, **self.hparams.phantom)

    def _split(self, name: str, train: bool) -> PreparedSplit:
        if name not in self.splits:
            self.splits[name] = PreparedSplit(
                self.data_dir,
                name,
                image_size=self.hparams.image_size,
                excerpt=self.excerpt,
                deterministic=not train,
                seed=self.hparams.seed,
                augment=self.hparams.augment if train else None,
                context_length=self.hparams.context_length,
            )
        return self.splits[name]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._split("train", train=True)
        if stage in (None, "fit", "validate"):
            self._split("validate", train=False)
        if stage in (None, "test"):
            self._split("test", train=False)

    def _loader(self, name: str, train: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            self._split(name, train),
            batch_size=self.hparams.batch_size if train else (self.hparams.eval_batch_size or self.hparams.batch_size),
            shuffle=train,
            drop_last=train and self.hparams.drop_last,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=self.hparams.persistent_workers and workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validate", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

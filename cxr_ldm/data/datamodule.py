"""``CXRDataModule``: batches of images, report excerpts and their tokens from a prepared folder."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from cxr_ldm.data.dataset import EpochSampler, PreparedSplit
from cxr_ldm.data.excerpts import ExcerptSampler
from cxr_ldm.data.latent_cache import SHARD_SIZE, LatentCacheError, LatentStore, ensure_latent_cache
from cxr_ldm.data.tokenization import CONTEXT_LENGTH
from cxr_ldm.utils.plain import to_plain


def _settings_of(prepare: Callable[[Path], Any] | None) -> Any:
    """What the hyper-parameters keep of the first-use preparation: a partial's ``_target_`` dict (its settings),
    another callable's name; never the function object."""
    if prepare is None or isinstance(prepare, functools.partial):
        return to_plain(prepare)
    return f"{getattr(prepare, '__module__', None)}.{getattr(prepare, '__qualname__', type(prepare).__name__)}"


class CXRDataModule(LightningDataModule):
    """Train / validate / test splits of a folder written by ``cxr_ldm.prepare``.

    Batches are dicts: ``image`` [B, 1, S, S] float 0..1, ``tokens`` [B, 77] (OpenCLIP, 0-padded),
    ``text`` (the excerpt, "" for the unconditional share), ``dicom_id``. Training excerpts are random;
    validation and test excerpts are fixed by ``seed``. ``phantom``: the first-use preparation, a callable that
    ``prepare_data`` calls with ``data_dir`` (phantom data: ``conf/data/phantom.yaml`` makes it a Hydra partial of
    :func:`cxr_ldm.phantom.bootstrap.ensure_phantom_prepared`); ``None`` when the folder is prepared already.
    Its plain settings are kept in ``hparams.phantom`` (as its ``_target_`` dict), never the function object.

    ``latent_cache`` (stage 2 only): batches carry the frozen autoencoder's cached posterior ``z_mu`` /
    ``z_sigma`` [B, C, h, w] float32 instead of ``image`` (validation and test batches keep ``image`` too, for
    callbacks that compare with real images). The cache (``cxr_ldm.data.latent_cache``) is built on first use
    by the trainer's ranks with the LightningModule's own autoencoder, when the dataloaders are requested
    (after a resumed checkpoint is restored), under ``latent_cache_dir`` (default ``<data_dir>/latent_cache``).
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
        phantom: Callable[[Path], Any] | None = None,
        latent_cache: bool = False,
        latent_cache_dir: str | None = None,
        latent_cache_shard_size: int = SHARD_SIZE,
    ) -> None:
        super().__init__()
        if latent_cache and (augment or {}).get("enabled", False):
            raise ValueError(
                "data.latent_cache=true and data.augment.enabled=true exclude each other: the cache holds one "
                "encoding per image, augmentation needs a new one every step. Set data.augment.enabled=false "
                "to train on cached latents, or data.latent_cache=false to augment."
            )
        if phantom is not None and not callable(phantom):
            raise TypeError(
                "phantom (the first-use preparation) must be a callable that prepares data_dir, such as a Hydra "
                f"partial (_partial_: true), got {type(phantom).__name__}"
            )
        self.save_hyperparameters(logger=False, ignore=["phantom"])
        self.hparams["phantom"] = _settings_of(phantom)  # plain values: checkpoints load with weights_only
        self.prepare_first_use = phantom
        self.data_dir = Path(data_dir)
        self.excerpt = ExcerptSampler(min_sentences, max_sentences, p_uncond)
        self.splits: dict[str, PreparedSplit] = {}

    def prepare_data(self) -> None:
        # Runs on one process per node before setup: the place to build the phantom data on first use.
        if self.prepare_first_use is not None:
            self.prepare_first_use(self.data_dir)

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

    def _latents(self, name: str) -> LatentStore:
        """The split's cached posterior under the attached stage-2 module's autoencoder (built if missing)."""
        trainer = self.trainer
        module = trainer.lightning_module if trainer is not None else None
        if module is None or not (hasattr(module, "encode_latents") and hasattr(module, "autoencoder")):
            kind = type(module).__name__ if module is not None else "no LightningModule"
            raise LatentCacheError(
                f"data.latent_cache=true caches the latents of a stage-2 model's frozen autoencoder, but this "
                f"run trains {kind}: use it with a LatentDiffusionModule (e.g. experiment=ldm), or set "
                "data.latent_cache=false"
            )
        require = getattr(module, "_require_autoencoder", None)
        if require is not None:
            require()
        return ensure_latent_cache(
            self.data_dir,
            name,
            self.hparams.image_size,
            module.autoencoder,
            arch=getattr(module.hparams, "autoencoder_arch", None),
            cache_dir=self.hparams.latent_cache_dir,
            shard_size=self.hparams.latent_cache_shard_size,
            device=trainer.strategy.root_device,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            barrier=trainer.strategy.barrier,
            batch_size=self.hparams.eval_batch_size or self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
            progress=trainer.is_global_zero,
        )

    def _loader(self, name: str, train: bool) -> DataLoader:
        split = self._split(name, train)
        if self.hparams.latent_cache and split.latents is None:
            split.latents = self._latents(name)
            split.keep_images = not train
        loader = StatefulDataLoader if train else DataLoader  # the training position goes into checkpoints
        sampler = self._train_sampler(split) if train else None
        workers = self.hparams.num_workers
        return loader(
            split,
            batch_size=self.hparams.batch_size if train else (self.hparams.eval_batch_size or self.hparams.batch_size),
            sampler=sampler,
            drop_last=train and self.hparams.drop_last,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=self.hparams.persistent_workers and workers > 0,
            # the workers' base seed from a generator of the loader's own, not from the global RNG: a loader
            # draws it at each new iterator, which a persistent one makes once per run and a resumed run again
            generator=torch.Generator().manual_seed(int(self.hparams.seed)),
        )

    def _train_sampler(self, split: PreparedSplit) -> EpochSampler:
        """The training order (``data/dataset.py::EpochSampler``), under DDP one rank's share as Lightning would
        inject it. It starts at the epoch of the run's next batch: Lightning builds a resumed run's first
        iterator before it sets the sampler's epoch, so the order would otherwise be epoch 0's."""
        trainer = self.trainer
        kwargs: dict[str, Any] = {"num_replicas": 1, "rank": 0}
        if trainer is not None and trainer.world_size > 1 and trainer._accelerator_connector.use_distributed_sampler:
            kwargs = dict(trainer.distributed_sampler_kwargs or kwargs)
        sampler = EpochSampler(split, shuffle=True, seed=int(os.getenv("PL_GLOBAL_SEED", 0)), **kwargs)
        sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0)
        return sampler

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validate", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

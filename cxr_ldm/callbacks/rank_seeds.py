"""Different random draws on every DDP rank from one ``seed`` (see ``cxr_ldm/utils/distributed.py``)."""

from __future__ import annotations

import logging
import os

import lightning as L
from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)


class RankSeeds(Callback):
    """Reseed rank ``r`` with ``seed + r`` once the ranks are known (no-op on a single process)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.world_size <= 1:
            return
        rank_seed = self.seed + trainer.global_rank
        L.seed_everything(rank_seed, workers=True, verbose=False)
        os.environ["PL_GLOBAL_SEED"] = str(
            self.seed
        )  # DistributedSampler's shuffling seed: the same everywhere
        log.info(
            "rank %d of %d: random draws seeded with %d", trainer.global_rank, trainer.world_size, rank_seed
        )

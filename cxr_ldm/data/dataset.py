"""One split of a prepared folder as a torch Dataset of ``{"image", "tokens", "text", ...}`` dicts.

With a latent cache attached (``latents``), items carry the cached posterior ``z_mu``/``z_sigma`` instead of
the image (``keep_images`` keeps the image too, for validation callbacks that need real images).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler
from torchvision.transforms.v2 import RandomAffine, RandomHorizontalFlip

from cxr_ldm.data.excerpts import ExcerptSampler
from cxr_ldm.data.image_files import load_image
from cxr_ldm.data.tokenization import CONTEXT_LENGTH, tokenize, warm_up


class LatentRows(Protocol):
    """What the dataset needs of a latent cache (``cxr_ldm.data.latent_cache.LatentStore`` is one)."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class PreparedSplit(Dataset):
    """Reads ``<data_dir>/<split>.csv`` written by ``cxr_ldm.prepare`` (or the phantom pipeline).

    ``deterministic`` makes the excerpt (and the unconditional draw) a function of ``(seed, index)``:
    validation and test see the same text every epoch. Otherwise (training) the excerpt, the unconditional
    draw and the augmentation are a function of ``(seed, epoch, index)``: each item gets a generator of its
    own, never torch's global RNG. :class:`EpochSampler` hands the epoch over with each index, so a
    DataLoader worker knows it even when it lives on from epoch to epoch (``persistent_workers``). Nothing
    depends on what a process drew before: a run resumed mid-epoch or at an epoch's end, with or without
    workers, draws what the uninterrupted run drew, and the global RNG stays the model's alone.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        image_size: int,
        excerpt: ExcerptSampler,
        deterministic: bool,
        seed: int = 0,
        augment: dict | None = None,
        context_length: int = CONTEXT_LENGTH,
    ) -> None:
        self.data_dir = Path(data_dir)
        csv = self.data_dir / f"{split}.csv"
        if not csv.is_file():
            raise FileNotFoundError(
                f"{csv} not found: data_dir must be a folder written by `python -m cxr_ldm.prepare` "
                f"(with train.csv, validate.csv, test.csv)."
            )
        frame = pd.read_csv(csv, dtype={"dicom_id": str}, keep_default_na=False)
        missing = [c for c in ("dicom_id", "image", "sentences") if c not in frame.columns]
        if missing:
            raise ValueError(f"{csv} lacks the column(s) {missing}; re-run `python -m cxr_ldm.prepare`.")
        self.frame = frame
        self.sentences = [json.loads(s) if s else [] for s in frame["sentences"]]
        self.image_size = image_size
        self.excerpt = excerpt
        self.deterministic = deterministic
        self.seed = seed
        self.context_length = context_length
        self.augment = _build_augment(augment or {})
        self.latents: LatentRows | None = None  # set by the DataModule when data.latent_cache=true
        self.keep_images = False
        warm_up(context_length)  # load tokenizer and image plugins before workers fork
        Image.preinit()
        Image.init()

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key``: ``(epoch, index)`` as :class:`EpochSampler` yields it, or an index alone (epoch 0's item)."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if self.deterministic:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        else:
            generator = self.item_generator(epoch, index)
        row = self.frame.iloc[index]
        item: dict = {}
        if self.latents is not None:
            item["z_mu"], item["z_sigma"] = self.latents[index]
        if self.latents is None or self.keep_images:
            image = load_image(self.data_dir / row["image"], self.image_size)
            if self.augment is not None:
                image = self._augmented(image, generator)
            item["image"] = image
        text = self.excerpt(self.sentences[index], generator=generator)
        item.update(tokens=tokenize(text, self.context_length)[0], text=text, dicom_id=row["dicom_id"])
        return item

    def item_generator(self, epoch: int, index: int) -> torch.Generator:
        """The training draws of item ``index`` in ``epoch``: seeded from the run's seed, the epoch and the
        index, mixed (SeedSequence) so that they are not the draws of the global RNG of the same seed."""
        mixed = np.random.SeedSequence([self.seed % 2**63, 0xC0FFEE, int(epoch), int(index)])
        first, second = mixed.generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(first) << 31 | int(second) >> 1)

    def _augmented(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """torchvision's transforms draw from the global RNG: they run on a fork of it seeded from ours."""
        seed = int(torch.randint(2**62, (), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.augment(image)

class EpochSampler(DistributedSampler):
    """The training order, a function of the seed and the epoch only (``DistributedSampler``'s: one process
    is one replica). It yields ``(epoch, index)``: the dataset's draws are per epoch and item, and a
    persistent DataLoader worker, whose copy of the dataset lives on from epoch to epoch, learns the epoch so. A
    resumed run builds its loader anew and draws nothing for the order; a plain ``RandomSampler`` draws its
    seed from the global RNG once the loader is built, which an uninterrupted run did only once."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in super().__iter__())


def _build_augment(cfg: dict):
    """Small affine jitter, and a left-right flip only on request (it swaps the sides a report names)."""
    if not cfg.get("enabled", False):
        return None
    ops = []
    if cfg.get("hflip", False):
        ops.append(RandomHorizontalFlip(p=0.5))
    ops.append(
        RandomAffine(
            degrees=cfg.get("degrees", 5.0),
            translate=tuple(cfg.get("translate", (0.03, 0.03))),
            scale=tuple(cfg.get("scale", (0.95, 1.05))),
        )
    )
    return torch.nn.Sequential(*ops)

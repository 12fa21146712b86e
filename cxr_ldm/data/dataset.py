"""One split of a prepared folder as a torch Dataset of ``{"image", "tokens", "text", ...}`` dicts.

With a latent cache attached (``latents``), items carry the cached posterior ``z_mu``/``z_sigma`` instead of
the image (``keep_images`` keeps the image too, for validation callbacks that need real images).
"""

from __future__ import annotations

import json
import os
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
    draw and the augmentation come from the dataset's own generator, one per process that reads items (the
    main process, or each DataLoader worker) and epoch (:class:`EpochSampler` tells the epoch), never from
    torch's global RNG. Its state is the dataset's ``state_dict``, which ``StatefulDataLoader`` keeps with the
    loader's position (per worker): a run resumed mid-epoch draws what the uninterrupted run drew, whatever
    batches were prefetched; one resumed at an epoch's end starts the next epoch's generator as the
    uninterrupted run did; and the global RNG stays the model's alone.
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
        self._rng: torch.Generator | None = None
        self._rng_owner: tuple[int, int] = (-1, -1)  # (process, epoch) the generator was seeded for
        self._epoch = 0
        warm_up(context_length)  # load tokenizer and image plugins before workers fork
        Image.preinit()
        Image.init()

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, index: int) -> dict:
        row = self.frame.iloc[index]
        item: dict = {}
        if self.latents is not None:
            item["z_mu"], item["z_sigma"] = self.latents[index]
        if self.latents is None or self.keep_images:
            image = load_image(self.data_dir / row["image"], self.image_size)
            if self.augment is not None:
                image = self._augmented(image)
            item["image"] = image
        if self.deterministic:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        else:
            generator = self._generator()
        text = self.excerpt(self.sentences[index], generator=generator)
        item.update(tokens=tokenize(text, self.context_length)[0], text=text, dicom_id=row["dicom_id"])
        return item

    def _generator(self) -> torch.Generator:
        """This process's training generator for this epoch, seeded at first use from the process's torch seed
        (which Lightning sets per rank and per worker) and the epoch, mixed so that its draws are not those
        of the global RNG of the same seed."""
        owner = (os.getpid(), self._epoch)
        if self._rng is None or self._rng_owner != owner:
            mixed = np.random.SeedSequence([torch.initial_seed() % 2**63, 0xC0FFEE, self._epoch])
            first, second = mixed.generate_state(2, np.uint32)
            self._rng = torch.Generator().manual_seed(int(first) << 31 | int(second) >> 1)
            self._rng_owner = owner
        return self._rng

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next training items belong to (:class:`EpochSampler` calls it)."""
        self._epoch = int(epoch)

    def _augmented(self, image: torch.Tensor) -> torch.Tensor:
        """torchvision's transforms draw from the global RNG: they run on a fork of it seeded from ours."""
        seed = int(torch.randint(2**62, (), generator=self._generator()))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.augment(image)

    def state_dict(self) -> dict:
        """The training generator's state and epoch (``StatefulDataLoader`` saves it with its position)."""
        if self._rng is None or self._rng_owner != (os.getpid(), self._epoch):
            return {"epoch": self._epoch}
        return {"epoch": self._epoch, "rng": self._rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.set_epoch(state.get("epoch", self._epoch))
        if "rng" in state:
            self._generator().set_state(state["rng"])


class EpochSampler(DistributedSampler):
    """The training order, a function of the seed and the epoch only (``DistributedSampler``'s: one process
    is one replica), which also tells the dataset the epoch (its generator is per epoch). A resumed run
    builds its loader anew and draws nothing for the order; a plain ``RandomSampler`` draws its seed from
    the global RNG once the loader is built, which an uninterrupted run did only once."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


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

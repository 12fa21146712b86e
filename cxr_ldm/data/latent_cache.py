"""Latent cache for stage 2: the frozen autoencoder's posterior of every image, encoded once.

A stage-2 step that encodes 512-px images online spends about a third of its compute in the frozen encoder.
The cache keeps, per image, the posterior mean and standard deviation (``float16``), so a training step only
samples ``z = mu + sigma * eps`` with fresh noise, exactly as online encoding does.

Layout, beside the prepared data unless ``cache_dir`` says otherwise::

    <data_dir>/latent_cache/<split>-<key>/meta.json
    <data_dir>/latent_cache/<split>-<key>/shard_00000.npy     rows 0..S-1 of <split>.csv: [n, 2, C, h, w] float16

``key`` hashes the autoencoder's weights and architecture, the image size, the shard size and the bytes of
``<split>.csv``: a changed autoencoder, image size or data set gets a new folder and never reads a stale cache.
Shards are written to a temporary file and renamed, so a killed build leaves only whole shards; the next build
encodes the missing ones and removes the dead build's temporary files. DDP ranks split the shards (shard ``i`` goes to rank ``i % world_size``); a rank
that, after the barrier, still misses shards (node-local storage) encodes them itself.

fp16 storage: ``|z_cached - z_online| <= 2**-11 * (|mu| + |sigma * eps|) + 6e-8 * |eps|`` (half-ulp rounding,
and the subnormal step for the tiny sigmas that a KL weight of 1e-8 gives), far below the diffusion noise.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from cxr_ldm.data.image_files import load_image
from cxr_ldm.utils.atomic import atomic_write, atomic_write_text, remove_stale_temporaries
from cxr_ldm.utils.folders import first_existing
from cxr_ldm.utils.hashing import state_dict_sha256

log = logging.getLogger(__name__)

CACHE_VERSION = 1
SHARD_SIZE = 1024
# Architecture switches that change how, not what, the encoder computes: not part of the key.
_ARCH_KEYS_IGNORED = ("use_checkpoint", "use_flash_attention")

Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class LatentCacheError(ValueError):
    """A cache folder that cannot be used as it is (the message names the file and the fix): a user error, one
    line, in train and cache_latents alike."""


# --------------------------------------------------------------------------------------------------- keys
def autoencoder_fingerprint(autoencoder: nn.Module, arch: Mapping[str, Any] | None = None) -> str:
    """sha256 of the autoencoder's weights (names, dtypes, shapes, bytes) and of its architecture kwargs."""
    arch = {k: v for k, v in dict(arch or {}).items() if k not in _ARCH_KEYS_IGNORED}
    prefix = json.dumps(arch, sort_keys=True, default=str).encode()
    return state_dict_sha256(autoencoder.state_dict(), separator="|", prefix=prefix)


def cache_key(fingerprint: str, image_size: int, manifest: Path, shard_size: int = SHARD_SIZE) -> str:
    """16 hex digits naming one cache folder: autoencoder, image size, shard size and manifest bytes."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{fingerprint}|{int(image_size)}|{int(shard_size)}|".encode())
    digest.update(Path(manifest).read_bytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ images
class ImageRows(Dataset):
    """The images of a split in manifest order, as the DataModule loads them (no augmentation)."""

    def __init__(self, paths: Sequence[Path], image_size: int) -> None:
        self.paths = list(paths)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return load_image(self.paths[index], self.image_size)


def split_images(data_dir: Path, split: str, image_size: int) -> ImageRows:
    frame = pd.read_csv(data_dir / f"{split}.csv", dtype={"dicom_id": str}, keep_default_na=False)
    return ImageRows([data_dir / p for p in frame["image"]], image_size)


# ------------------------------------------------------------------------------------------------- cache
class LatentCache:
    """One split's cache folder: which shards exist, building the missing ones, reading them."""

    def __init__(self, folder: Path, n: int, shard_size: int = SHARD_SIZE) -> None:
        if shard_size < 1:
            raise ValueError(f"latent cache shard_size must be >= 1, got {shard_size}")
        self.folder = Path(folder)
        self.n = int(n)
        self.shard_size = int(shard_size)

    @property
    def n_shards(self) -> int:
        return (self.n + self.shard_size - 1) // self.shard_size

    def shard_path(self, shard: int) -> Path:
        return self.folder / f"shard_{shard:05d}.npy"

    def shard_rows(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.n))

    def missing(self) -> list[int]:
        return [i for i in range(self.n_shards) if not self.shard_path(i).is_file()]

    def complete(self) -> bool:
        return not self.missing()

    def build(
        self,
        encode: Encoder,
        images: Dataset,
        device: torch.device | str = "cpu",
        shards: Sequence[int] | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        progress: bool = True,
    ) -> int:
        """Encode ``shards`` (default: all missing ones) and write each atomically; returns how many."""
        todo = [s for s in (self.missing() if shards is None else shards) if not self.shard_path(s).is_file()]
        if not todo:
            return 0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            there = first_existing(self.folder)
            why = f"{there} is a file" if there.exists() and not there.is_dir() else (error.strerror or str(error))
            raise LatentCacheError(
                f"cannot create the latent cache folder {self.folder}: {why}; set data.latent_cache_dir to a "
                "writable folder"
            ) from error
        rows = [i for s in todo for i in self.shard_rows(s)]
        loader = DataLoader(
            Subset(images, rows),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            generator=torch.Generator(),  # never draws from (and so never shifts) the global random state
        )
        device = torch.device(device)
        pending: list[np.ndarray] = []
        filled = 0
        queue = list(todo)
        bar = tqdm(total=len(rows), desc=f"latent cache {self.folder.name}", unit="img", disable=not progress)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for batch in loader:
                with torch.autocast(device.type, enabled=False):
                    mu, sigma = encode(batch.to(device).float())
                both = torch.stack([mu.float(), sigma.float()], dim=1).to(torch.float16).cpu().numpy()
                if not np.isfinite(both).all():
                    raise LatentCacheError(
                        f"posterior values outside the float16 range for a batch of {self.folder}: this "
                        "autoencoder cannot be cached in fp16; set data.latent_cache=false"
                    )
                pending.append(both)
                filled += len(both)
                bar.update(len(both))
                while queue and filled >= len(self.shard_rows(queue[0])):
                    size = len(self.shard_rows(queue[0]))
                    stacked = np.concatenate(pending)
                    self._write(queue.pop(0), stacked[:size])
                    pending, filled = [stacked[size:]], len(stacked) - size
        bar.close()
        return len(todo)

    def _write(self, shard: int, array: np.ndarray) -> None:
        # atomic: readers see a whole shard or none
        atomic_write(self.shard_path(shard), lambda fh: np.save(fh, np.ascontiguousarray(array)), "latent shard")

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        path = self.folder / "meta.json"
        if path.is_file():
            return
        text = json.dumps({"n": self.n, "shard_size": self.shard_size, **meta}, indent=2)
        atomic_write_text(path, text, "latent cache meta file", durable=False)

    def reader(self) -> LatentStore:
        missing = self.missing()
        if missing:
            raise LatentCacheError(
                f"latent cache {self.folder} lacks {len(missing)} of {self.n_shards} shards "
                f"(e.g. {self.shard_path(missing[0]).name}); build it first"
            )
        return LatentStore(self)


class LatentStore:
    """``store[i] -> (z_mu, z_sigma)`` float32 of row ``i``; shards are memory-mapped lazily (per process)."""

    def __init__(self, cache: LatentCache) -> None:
        self.cache = cache
        self._maps: dict[int, np.ndarray] = {}
        first = self._shard(0)
        self.latent_shape = tuple(int(s) for s in first.shape[2:])

    def __len__(self) -> int:
        return self.cache.n

    def _shard(self, shard: int) -> np.ndarray:
        array = self._maps.get(shard)
        if array is None:
            path = self.cache.shard_path(shard)
            array = np.load(path, mmap_mode="r")
            expected = len(self.cache.shard_rows(shard))
            if array.ndim != 5 or array.shape[0] != expected or array.shape[1] != 2:
                raise LatentCacheError(
                    f"{path} has shape {array.shape}, expected [{expected}, 2, C, h, w]: delete it and the "
                    "next run encodes it again"
                )
            self._maps[shard] = array
        return array

    def __getstate__(self) -> dict[str, Any]:  # workers open their own maps
        return {"cache": self.cache, "_maps": {}, "latent_shape": self.latent_shape}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.cache.n:
            raise IndexError(index)
        shard, offset = divmod(int(index), self.cache.shard_size)
        both = torch.from_numpy(np.array(self._shard(shard)[offset], dtype=np.float32))
        return both[0], both[1]


# ------------------------------------------------------------------------------------------ the one entry
def ensure_latent_cache(
    data_dir: str | Path,
    split: str,
    image_size: int,
    autoencoder: nn.Module,
    arch: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    shard_size: int = SHARD_SIZE,
    device: torch.device | str | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> LatentStore:
    """The split's latent cache for this autoencoder, built first where shards are missing; every rank calls it.

    ``autoencoder.encode`` runs under ``no_grad`` in fp32 on ``device`` (default: where its weights are).
    """
    data_dir = Path(data_dir)
    manifest = data_dir / f"{split}.csv"
    images = split_images(data_dir, split, image_size)
    fingerprint = autoencoder_fingerprint(autoencoder, arch)
    key = cache_key(fingerprint, image_size, manifest, shard_size)
    root = Path(cache_dir) if cache_dir is not None else data_dir / "latent_cache"
    cache = LatentCache(root / f"{split}-{key}", len(images), shard_size)
    if device is None:
        device = next(autoencoder.parameters()).device
    missing = cache.missing()
    # under DDP every rank meets at the barrier: a rank's own look at the folder is no agreement (a slow rank may
    # find the shards a fast one has just written, skip the barrier and leave that one waiting in it for ever)
    if missing or world_size > 1:
        if rank == 0 and missing:
            log.info(
                "latent cache %s: %d images, encoding %d of %d shards on %d rank(s)",
                cache.folder, cache.n, len(missing), cache.n_shards, world_size,
            )  # fmt: skip
        was_training = autoencoder.training
        autoencoder.eval()
        try:
            build = dict(device=device, batch_size=batch_size, num_workers=num_workers)
            mine = [s for s in missing if s % world_size == rank]
            built = cache.build(autoencoder.encode, images, shards=mine, progress=progress and rank == 0, **build)
            if barrier is not None:
                barrier()
            # storage that other ranks' shards do not reach (node-local disks): encode the rest here
            built += cache.build(autoencoder.encode, images, progress=progress and rank == 0, **build)
        finally:
            autoencoder.train(was_training)
        log.info("latent cache: rank %d of %d encoded %d shard(s) of %s", rank, world_size, built, cache.folder.name)
    if rank == 0:
        # every shard is there now: the temporary files left are those of killed builds (a live process's,
        # another rank's on this node, are kept)
        remove_stale_temporaries(cache.folder)
        cache.write_meta(
            {
                "version": CACHE_VERSION,
                "split": split,
                "manifest": str(manifest),
                "image_size": int(image_size),
                "autoencoder_sha256": fingerprint,
                "dtype": "float16",
                "layout": "[n, 2 (mu, sigma), C, h, w]",
            }
        )
    return cache.reader()

"""Stage 2's latent cache built ahead of training, from the same overrides as the training run (hence the same
data, image size, autoencoder and cache key): the work of ``python -m cxr_ldm.cache_latents``."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cxr_ldm.data.latent_cache import ensure_latent_cache
from cxr_ldm.utils.devices import resolve_device

SPLITS = ("train", "validate", "test")  # the manifests prepare writes
DEFAULT_SPLITS = ("train", "validate")  # what stage 2 reads


def cache_splits(given: Any) -> list[str]:
    """``+cache_splits=`` as a list of known split names (one name alone is a list of one)."""
    if given is None:
        return list(DEFAULT_SPLITS)
    if OmegaConf.is_config(given):
        given = OmegaConf.to_container(given)
    names = [given] if isinstance(given, str) else [str(s) for s in given]
    unknown = [s for s in names if s not in SPLITS]
    if unknown or not names:
        raise ValueError(
            f"cache_splits={names}: {'unknown split ' + repr(unknown[0]) if unknown else 'no split'}; give a list "
            f"of {', '.join(SPLITS)} (e.g. +cache_splits=[train,validate])"
        )
    return names


def cache_latents_as_configured(cfg: DictConfig) -> dict[str, int]:
    """Build (or complete) the cache of ``cache_splits`` (default train and validate); returns each split's size."""
    from monai.networks.nets import AutoencoderKL

    from cxr_ldm.models.diffusion import read_autoencoder_checkpoint

    if not cfg.model.get("autoencoder_ckpt"):
        raise ValueError(
            "cache_latents needs the stage-1 checkpoint of the stage-2 run: model.autoencoder_ckpt=AEKL.ckpt "
            "(with experiment=ldm or ldm_phantom)"
        )
    splits = cache_splits(cfg.get("cache_splits"))
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()  # phantom data are made on first use
    arch, state = read_autoencoder_checkpoint(cfg.model.autoencoder_ckpt)
    device = resolve_device(str(cfg.get("cache_device") or "auto"), option="cache_device")
    autoencoder = AutoencoderKL(**arch)
    autoencoder.load_state_dict(state)
    autoencoder.to(device).eval()
    sizes = {}
    for split in splits:
        store = ensure_latent_cache(
            datamodule.data_dir, split, cfg.data.image_size, autoencoder, arch=arch,
            cache_dir=cfg.data.get("latent_cache_dir"), shard_size=cfg.data.get("latent_cache_shard_size", 1024),
            device=device, batch_size=cfg.data.get("eval_batch_size") or cfg.data.batch_size,
            num_workers=cfg.data.num_workers,
        )  # fmt: skip
        print(f"{split}: {len(store)} posteriors of shape {store.latent_shape} in {store.cache.folder}")
        sizes[split] = len(store)
    return sizes

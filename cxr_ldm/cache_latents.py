"""``python -m cxr_ldm.cache_latents experiment=ldm model.autoencoder_ckpt=AEKL.ckpt [overrides]``.

Builds stage 2's latent cache (``cxr_ldm.data.latent_cache``) ahead of training, e.g. on one GPU before a
multi-node job: the same overrides as the training run, so the same data, image size and autoencoder, hence the
same cache key; the training run with ``data.latent_cache=true`` then finds every shard. Without it the first
training run builds the cache itself (its ranks split the work). ``+cache_splits=[train,validate]`` and
``+cache_device=cuda:0`` choose what and where (default: train and validate, the first GPU or the CPU).
"""

from __future__ import annotations

import logging

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cxr_ldm.data.latent_cache import ensure_latent_cache
from cxr_ldm.utils import resolvers  # noqa: F401  (registers the config resolvers)

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from monai.networks.nets import AutoencoderKL

    from cxr_ldm.models.diffusion import read_autoencoder_checkpoint

    if not cfg.model.get("autoencoder_ckpt"):
        raise SystemExit(
            "cache_latents needs the stage-1 checkpoint of the stage-2 run: model.autoencoder_ckpt=AEKL.ckpt "
            "(with experiment=ldm or ldm_phantom)"
        )
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()  # phantom data are made on first use
    arch, state = read_autoencoder_checkpoint(cfg.model.autoencoder_ckpt)
    device = torch.device(cfg.get("cache_device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    autoencoder = AutoencoderKL(**arch)
    autoencoder.load_state_dict(state)
    autoencoder.to(device).eval()
    for split in cfg.get("cache_splits") or ["train", "validate"]:
        store = ensure_latent_cache(
            datamodule.data_dir,
            split,
            cfg.data.image_size,
            autoencoder,
            arch=arch,
            cache_dir=cfg.data.get("latent_cache_dir"),
            shard_size=cfg.data.get("latent_cache_shard_size", 1024),
            device=device,
            batch_size=cfg.data.get("eval_batch_size") or cfg.data.batch_size,
            num_workers=cfg.data.num_workers,
        )
        print(f"{split}: {len(store)} posteriors of shape {store.latent_shape} in {store.cache.folder}")


if __name__ == "__main__":
    main()

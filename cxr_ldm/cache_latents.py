"""``python -m cxr_ldm.cache_latents experiment=ldm model.autoencoder_ckpt=AEKL.ckpt [overrides]``.

Builds stage 2's latent cache (``cxr_ldm.data.latent_cache``) ahead of training, e.g. on one GPU before a
multi-node job: the same overrides as the training run, so the same data, image size and autoencoder, hence the
same cache key; the training run with ``data.latent_cache=true`` then finds every shard. Without it the first
training run builds the cache itself (its ranks split the work). ``+cache_splits=[train,validate]`` and
``+cache_device=cuda:0`` choose what and where (default: train and validate, the first GPU or the CPU).
"""

from __future__ import annotations

from omegaconf import DictConfig

from cxr_ldm.training.latent_cache_job import cache_latents_as_configured
from cxr_ldm.utils import resolvers  # noqa: F401  (registers the config resolvers)
from cxr_ldm.utils.cli import CONF, hydra_command, run_command


@hydra_command(config_path=CONF, config_name="train")
def main(cfg: DictConfig) -> None:
    run_command(cache_latents_as_configured, cfg)


if __name__ == "__main__":
    main()

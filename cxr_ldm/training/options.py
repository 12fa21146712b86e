"""Training options that would fail deep inside a run (or silently), refused first as one line naming the option."""

from __future__ import annotations

from typing import Any

import hydra
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf


def instantiate_option(node: DictConfig, option: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``; a constructor's user error comes out as that error, naming the option."""
    try:
        return hydra.utils.instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        raise user_error(option, err.__cause__) from err
    except MisconfigurationException as err:  # Lightning's word for a bad Trainer option
        raise ValueError(f"{option}: {err}") from err


def _factor(channels: Any) -> int:
    return 2 ** (len(channels) - 1) if channels else 1


def check_options(cfg: DictConfig) -> None:
    """Impossible values that would otherwise fail deep inside a run (or silently), as one clear line."""
    data, model, trainer = cfg.get("data") or {}, cfg.get("model") or {}, cfg.get("trainer") or {}
    for key, low in (("batch_size", 1), ("num_workers", 0), ("min_sentences", 1), ("max_sentences", 1)):
        value = data.get(key)
        if isinstance(value, int) and value < low:
            raise ValueError(f"data.{key}={value}: must be at least {low}")
    if data.get("min_sentences", 1) > data.get("max_sentences", 1 << 30):
        raise ValueError(f"data.min_sentences={data.min_sentences} is above data.max_sentences={data.max_sentences}")
    p_uncond = data.get("p_uncond")
    if isinstance(p_uncond, (int, float)) and not 0 <= p_uncond <= 1:
        raise ValueError(f"data.p_uncond={p_uncond}: a probability, between 0 and 1")
    timeout = cfg.get("ddp_timeout_s")
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout <= 0:
        raise ValueError(f"ddp_timeout_s={timeout}: must be a positive number of seconds (or null: Lightning's default)")
    every = trainer.get("check_val_every_n_epoch")
    if isinstance(every, int) and every < 1:
        raise ValueError(f"trainer.check_val_every_n_epoch={every}: must be at least 1 (or null with val_check_interval)")
    size = data.get("image_size")
    channels = OmegaConf.select(model, "autoencoder.channels", default=None)  # stage 1
    if isinstance(size, int) and channels is not None and size % _factor(channels):
        factor = _factor(channels)
        raise ValueError(
            f"data.image_size={size} is not divisible by {factor}, the autoencoder's downsampling factor "
            f"({len(channels)} levels in model.autoencoder.channels): use a multiple of {factor}, e.g. "
            f"{max(factor, size // factor * factor)}"
        )
    check_latent_size(cfg, OmegaConf.select(model, "autoencoder_arch.channels", default=None))


def check_latent_size(cfg: DictConfig, autoencoder_channels: Any) -> None:
    """Stage 2: the UNet halves the latent ``len(unet.channels) - 1`` times, so the latent must divide too."""
    size = OmegaConf.select(cfg, "data.image_size", default=None)
    unet = OmegaConf.select(cfg, "model.unet.channels", default=None)
    if not isinstance(size, int) or unet is None or autoencoder_channels is None:
        return
    ae_factor, factor = _factor(autoencoder_channels), _factor(unet)
    if size % ae_factor:
        raise ValueError(
            f"data.image_size={size} is not divisible by {ae_factor}, the downsampling factor of the stage-1 "
            f"autoencoder ({len(autoencoder_channels)} levels): use a multiple of {ae_factor * factor}"
        )
    latent = size // ae_factor
    if latent % factor:
        raise ValueError(
            f"data.image_size={size} gives {latent}x{latent} latents, not divisible by {factor}, the UNet's "
            f"downsampling factor ({len(unet)} levels in model.unet.channels): use a multiple of {ae_factor * factor}"
        )


def user_error(option: str, cause: BaseException | None) -> Exception:
    """The error a user sees for a constructor that refused its options: one line naming ``option``."""
    if isinstance(cause, FileNotFoundError):
        return FileNotFoundError(f"{option}: {cause}")
    if isinstance(cause, (ValueError, TypeError, MisconfigurationException)):
        return ValueError(f"{option}: {cause}")
    return cause if isinstance(cause, Exception) else RuntimeError(str(cause))

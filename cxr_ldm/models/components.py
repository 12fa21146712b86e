"""The networks and numbers a latent-diffusion model is made of, and how to read them from a training checkpoint.

Every way of getting a model (a trained ``ldm.ckpt``, an exported folder, the released MONAI bundle) ends in
one ``LDMComponents``; the pipeline samples from components and the training module can start from them
(``init_from``), so no caller needs the LightningModule that trained a model to use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

from cxr_ldm.models.text_encoder import FrozenOpenCLIPTextEncoder, build_text_encoder
from cxr_ldm.utils.checkpoints import CheckpointFileError, load_checkpoint_file

# Keys of a noise schedule that sampling needs (MONAI DDPMScheduler arguments of the training config).
SCHEDULE_KEYS = ("num_train_timesteps", "schedule", "beta_start", "beta_end", "prediction_type")


class ModelLoadError(ValueError):
    """A model path that cannot be loaded; the message names the file and the fix (shown without a traceback)."""


@dataclass
class LDMComponents:
    """A complete text-to-image latent diffusion model.

    ``configs`` holds the plain constructor kwargs of ``autoencoder``, ``unet`` and ``text_encoder`` (what an
    export writes as ``config.json``); ``defaults`` the sampler settings the model is meant to be sampled with
    (``sampler``, ``num_inference_steps``, ``guidance_scale``, ``timestep_spacing``); ``source`` where it came from.
    """

    autoencoder: AutoencoderKL
    unet: DiffusionModelUNet
    text_encoder: FrozenOpenCLIPTextEncoder | None
    schedule: dict[str, Any]
    scale_factor: float
    latent_shape: tuple[int, int, int]
    configs: dict[str, dict[str, Any]]
    defaults: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)


def check_unet_fits(unet_cfg: dict[str, Any], ae_cfg: dict[str, Any], text_width: int | None, where: str) -> None:
    """Shapes must chain: AE latent channels -> UNet in/out, text width -> cross-attention width."""
    latent = int(ae_cfg.get("latent_channels", 3))
    if unet_cfg.get("in_channels") != latent or unet_cfg.get("out_channels") != latent:
        raise ModelLoadError(
            f"{where}: the UNet's in/out_channels ({unet_cfg.get('in_channels')}, {unet_cfg.get('out_channels')}) "
            f"do not match the autoencoder's latent_channels ({latent})"
        )
    if text_width is not None and unet_cfg.get("cross_attention_dim") != text_width:
        raise ModelLoadError(
            f"{where}: the text encoder gives {text_width}-wide tokens but the UNet's cross_attention_dim is "
            f"{unet_cfg.get('cross_attention_dim')}: give the text encoder the model was trained with"
        )


def downsampling_factor(ae_cfg: dict[str, Any]) -> int:
    return 2 ** (len(ae_cfg["channels"]) - 1)


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, where: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0:3]
        raise ModelLoadError(f"{where}: the {what} weights do not fit its config: {' '.join(first)[:300]}") from err


def read_ldm_checkpoint(path: str | Path, option: str = "model") -> LDMComponents:
    """Components of a stage-2 ``LatentDiffusionModule`` checkpoint (EMA UNet when present), without Lightning.
    A file that is no checkpoint (truncated, an image, a text) is one line naming ``option``."""
    path = Path(path).expanduser()
    try:
        ckpt = load_checkpoint_file(path, option)
    except CheckpointFileError as err:
        raise ModelLoadError(str(err)) from err
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not hp or not state or "unet" not in hp or "autoencoder_arch" not in hp:
        raise ModelLoadError(
            f"{path} is not a stage-2 checkpoint of cxr_ldm (no 'unet' / 'autoencoder_arch' hyper-parameters): "
            "give the ldm.ckpt of `python -m cxr_ldm.train experiment=ldm...`, an exported folder or a MONAI bundle"
        )

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    ae_cfg, unet_cfg, text_cfg = dict(hp["autoencoder_arch"]), dict(hp["unet"]), dict(hp["text_encoder"])
    autoencoder = AutoencoderKL(**ae_cfg)
    _load_strict(autoencoder, part("autoencoder."), "autoencoder", str(path))
    unet = DiffusionModelUNet(**unet_cfg)
    ema_state = part("ema.module.")
    _load_strict(unet, ema_state or part("unet."), "UNet", str(path))
    text_state = part("text_encoder.")
    text_encoder = build_text_encoder(text_cfg)
    if text_state:
        _load_strict(text_encoder, text_state, "text encoder", str(path))
    check_unet_fits(unet_cfg, ae_cfg, text_encoder.width, str(path))

    scale = float(state["scale_factor"]) if "scale_factor" in state else float(hp.get("scale_factor", 1.0))
    if not torch.isfinite(torch.tensor(scale)):
        raise ModelLoadError(f"{path}: scale_factor was never measured (the run stopped before its first batch)")
    shape = tuple(int(s) for s in state.get("latent_shape_buffer", torch.zeros(3)))
    if 0 in shape:
        raise ModelLoadError(f"{path}: the latent shape is unknown (set model.image_size when training)")
    schedule = {k: hp["scheduler"][k] for k in SCHEDULE_KEYS if k in hp["scheduler"]}
    return LDMComponents(
        autoencoder=autoencoder.eval(),
        unet=unet.eval(),
        text_encoder=text_encoder,
        schedule=schedule,
        scale_factor=scale,
        latent_shape=shape,  # type: ignore[arg-type]
        configs={"autoencoder": ae_cfg, "unet": unet_cfg, "text_encoder": text_cfg},
        source={"kind": "checkpoint", "path": str(path.resolve()), "ema": bool(ema_state)},
    )

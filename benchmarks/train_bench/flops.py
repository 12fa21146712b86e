"""FLOP counts on the meta device (nothing is computed) and GPU peaks, for MFU."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf

# dense (no sparsity) bf16 tensor-core peaks, TFLOPS
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "H800": 989.4, "GH200": 989.4, "A100": 312.0, "A800": 312.0,
                    "L40S": 362.1, "L40": 181.0, "A10G": 70.0, "L4": 121.0}  # fmt: skip


def unet_training_flops(unet_kwargs: dict[str, Any], latent_shape: tuple[int, ...], width: int) -> int:
    """FLOPs of one image's UNet forward + backward (counted on the meta device: nothing is computed)."""
    from monai.networks.nets import DiffusionModelUNet
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = DiffusionModelUNet(**unet_kwargs)
        x = torch.randn(1, *latent_shape)
        t = torch.zeros(1, dtype=torch.long)
        context = torch.randn(1, 77, width)
    with FlopCounterMode(display=False) as counter:
        unet(x, timesteps=t, context=context).sum().backward()
    return int(counter.get_total_flops())


def read_arch(cfg: Any) -> dict[str, Any]:
    from cxr_ldm.models.diffusion import read_autoencoder_checkpoint

    return read_autoencoder_checkpoint(cfg.model.autoencoder_ckpt)[0]


def frozen_flops(cfg: Any, size: int) -> dict[str, float]:
    """GFLOP per image of the frozen parts of a stage-2 step: the AE encoder (online encoding only) and the text
    tower, counted on the meta device."""
    from monai.networks.nets import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    from cxr_ldm.models.text_encoder import FrozenOpenCLIPTextEncoder

    arch = read_arch(cfg)
    text = OmegaConf.to_container(cfg.model.text_encoder, resolve=True)
    with torch.device("meta"):
        ae = AutoencoderKL(**arch)
        tower = FrozenOpenCLIPTextEncoder(model_name=text.get("model_name"), text_cfg=text.get("text_cfg"), seed=0)
        images, tokens = torch.randn(1, 1, size, size), torch.zeros(1, 77, dtype=torch.long)
    out = {}
    for name, fn in (("encoder_fwd", lambda: ae.encode(images)), ("text_fwd", lambda: tower(tokens))):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        out[name] = counter.get_total_flops() / 1e9
    return out


def gpu_peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "given"
    if device.type != "cuda":
        return None, ""
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_TFLOPS[key], name
    return None, name


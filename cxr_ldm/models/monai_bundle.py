"""Read the released MONAI model-zoo bundle ``cxr_image_synthesis_latent_diffusion_model`` into components.

The bundle (``configs/inference.json``, ``models/autoencoder.pt`` and ``models/model.pt``; older copies name
them ``autoencoder.pth`` / ``diffusion_model.pth``) holds plain state dicts in the archived monai-generative key
format (``"load_old": 1``), which MONAI core converts with ``load_old_state_dict``. Its sampler
(``scripts/sampler.py``) decodes ``latents / 0.3``, guides with 7.0 and runs MONAI 1.4's DDIM for 50 steps, whose
timesteps are "leading" (980, 960, ..., 0): those are this model's defaults. Images come out as they are
(upright, the patient's right on the image's left), so nothing is flipped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

from cxr_ldm.models.components import (
    SCHEDULE_KEYS,
    LDMComponents,
    ModelLoadError,
    check_unet_fits,
    downsampling_factor,
)
from cxr_ldm.models.text_encoder import build_text_encoder, sd21_text_encoder_config

INFERENCE_CONFIG = "configs/inference.json"
BUNDLE_SCALE_FACTOR = 0.3  # scripts/sampler.py's default; inference.json never passes another
BUNDLE_DEFAULTS = {"sampler": "ddim", "num_inference_steps": 50, "guidance_scale": 7.0, "timestep_spacing": "leading"}
_WEIGHTS = {
    "autoencoder": ("load_autoencoder_path", ("autoencoder.pt", "autoencoder.pth")),
    "unet": ("load_diffusion_path", ("model.pt", "diffusion_model.pth")),
}
SD21_TEXT_ENCODER_HINT = (
    "text_encoder=PATH: the text_encoder/ folder of Stable Diffusion 2.1-base "
    "(https://huggingface.co/stabilityai/stable-diffusion-2-1-base: text_encoder/config.json and model.safetensors)"
)


def is_monai_bundle(path: Path) -> bool:
    return (path / INFERENCE_CONFIG).is_file()


def _network_kwargs(definition: Any, key: str, config_file: Path) -> dict[str, Any]:
    if not isinstance(definition, dict) or "_target_" not in definition:
        raise ModelLoadError(f"{config_file}: '{key}' is missing or not a network definition with _target_")
    kwargs = {k: v for k, v in definition.items() if not k.startswith("_")}
    unresolved = {k: v for k, v in kwargs.items() if isinstance(v, str) and v[:1] in "$@%"}
    if unresolved:
        raise ModelLoadError(f"{config_file}: '{key}' uses expressions this reader does not evaluate: {unresolved}")
    return kwargs


def _weights_file(bundle: Path, config: dict[str, Any], part: str) -> Path:
    key, names = _WEIGHTS[part]
    expression = str(config.get(key, ""))
    named = re.findall(r"['\"]/?([^'\"/]+\.pth?)['\"]", expression)
    candidates = list(dict.fromkeys([*named, *names]))
    for name in candidates:
        if (bundle / "models" / name).is_file():
            return bundle / "models" / name
    raise ModelLoadError(
        f"{bundle / 'models'}: no {part} weights ({' or '.join(candidates)}). Download the bundle with "
        "`python -m monai.bundle download cxr_image_synthesis_latent_diffusion_model --bundle_dir DIR` "
        "(its large_files.yml lists the weight files) and give model=DIR/cxr_image_synthesis_latent_diffusion_model"
    )


def _load_old(network: torch.nn.Module, file: Path, old_format: bool) -> None:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelLoadError(f"{file} is not a readable PyTorch state dict ({type(err).__name__})") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        if old_format:
            network.load_old_state_dict(state)
        else:
            network.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError) as err:
        raise ModelLoadError(
            f"{file} does not fit the network that {INFERENCE_CONFIG} defines: {str(err).splitlines()[0][:300]}"
        ) from err


def _latent_shape(config: dict[str, Any], ae_kwargs: dict[str, Any]) -> tuple[int, int, int]:
    """From the bundle's ``noise`` expression (``torch.randn((1, 3, 64, 64))``), else 512 px / the AE factor."""
    match = re.search(r"randn\(\(\s*\d+\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)", str(config.get("noise", "")))
    if match:
        return tuple(int(g) for g in match.groups())  # type: ignore[return-value]
    side = 512 // downsampling_factor(ae_kwargs)
    return (int(ae_kwargs.get("latent_channels", 3)), side, side)


def read_monai_bundle(bundle_dir: str | Path, text_encoder: str | Path | None = None) -> LDMComponents:
    """Components of the bundle; ``text_encoder`` is SD 2.1-base's ``text_encoder/`` folder (or an open_clip file).

    Without ``text_encoder`` the components have none (enough to fine-tune from the bundle's networks).
    """
    bundle = Path(bundle_dir).expanduser()
    config_file = bundle / INFERENCE_CONFIG
    if not config_file.is_file():
        raise ModelLoadError(f"{bundle} is not a MONAI bundle: {INFERENCE_CONFIG} not found")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{config_file} is not valid JSON ({err})") from err
    ae_kwargs = _network_kwargs(config.get("autoencoder_def"), "autoencoder_def", config_file)
    unet_kwargs = _network_kwargs(config.get("diffusion_def"), "diffusion_def", config_file)
    schedule_def = config.get("scheduler") or {}
    schedule = {k: schedule_def[k] for k in SCHEDULE_KEYS if k in schedule_def}
    if len(schedule) < len(SCHEDULE_KEYS):
        missing = sorted(set(SCHEDULE_KEYS) - set(schedule))
        raise ModelLoadError(f"{config_file}: 'scheduler' lacks {missing}")
    old_format = bool(config.get("load_old", 0))
    ae_file, unet_file = _weights_file(bundle, config, "autoencoder"), _weights_file(bundle, config, "unet")

    text_cfg = sd21_text_encoder_config(text_encoder) if text_encoder is not None else {}
    text = build_text_encoder(text_cfg) if text_cfg else None
    check_unet_fits(unet_kwargs, ae_kwargs, text.width if text is not None else None, str(config_file))
    autoencoder = AutoencoderKL(**ae_kwargs)
    _load_old(autoencoder, ae_file, old_format)
    unet = DiffusionModelUNet(**unet_kwargs)
    _load_old(unet, unet_file, old_format)
    return LDMComponents(
        autoencoder=autoencoder.eval(),
        unet=unet.eval(),
        text_encoder=text,
        schedule=schedule,
        scale_factor=BUNDLE_SCALE_FACTOR,
        latent_shape=_latent_shape(config, ae_kwargs),
        configs={"autoencoder": ae_kwargs, "unet": unet_kwargs, "text_encoder": text_cfg},
        defaults=dict(BUNDLE_DEFAULTS),
        source={"kind": "monai_bundle", "path": str(bundle.resolve()), "weights": [str(ae_file), str(unet_file)]},
    )

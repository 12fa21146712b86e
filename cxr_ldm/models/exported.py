"""The exported model folder: a diffusers-like layout that is read back from JSON and safetensors only.

```
DIR/model_index.json                 what the folder holds, scale factor, latent shape, sampling defaults
DIR/autoencoder/config.json          MONAI AutoencoderKL kwargs   + diffusion_pytorch_model.safetensors
DIR/unet/config.json                 MONAI DiffusionModelUNet kwargs (the EMA weights) + .safetensors
DIR/text_encoder/config.json         FrozenOpenCLIPTextEncoder kwargs; model.safetensors for a seeded tower,
                                     else a reference to the pretrained file (never copied)
DIR/scheduler/scheduler_config.json  the training noise schedule
DIR/README.md                        the model card
```

No pickle is involved in reading, so a downloaded folder cannot run code on load.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cxr_ldm.models.components import LDMComponents, ModelLoadError, check_unet_fits
from cxr_ldm.models.text_encoder import build_text_encoder
from cxr_ldm.utils.atomic import atomic_folder
from cxr_ldm.utils.folders import check_output_folder

INDEX_FILE = "model_index.json"
EXPORTED_CLASS = "CXRLDMPipeline"  # model_index.json's _class_name of our exports
FORMAT_VERSION = 1
NETWORK_WEIGHTS = "diffusion_pytorch_model.safetensors"
TEXT_WEIGHTS = "model.safetensors"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
CLASSES = {
    "autoencoder": ["monai.networks.nets", "AutoencoderKL"],
    "unet": ["monai.networks.nets", "DiffusionModelUNet"],
    "text_encoder": ["cxr_ldm.models.text_encoder", "FrozenOpenCLIPTextEncoder"],
    "scheduler": ["monai.networks.schedulers", "DDPMScheduler"],
}


def is_exported_folder(path: Path) -> bool:
    return (path / INDEX_FILE).is_file()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _save_weights(module: torch.nn.Module, path: Path) -> None:
    """safetensors' writer reports I/O failures as its own error type; as an ``OSError`` a full disk reads as one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_file(_tensors(module), str(path))
    except SafetensorError as error:
        code = errno.ENOSPC if "os error 28" in str(error) else errno.EIO
        raise OSError(code, os.strerror(code) if code == errno.ENOSPC else str(error), str(path)) from error


def check_export_folder(out_dir: str | Path, overwrite: bool = False) -> Path:
    """The folder to export into, if it can be: a folder (or none yet), empty unless ``overwrite``."""
    out = check_output_folder(out_dir)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ModelLoadError(f"out_dir={str(out)!r} exists and is not empty: choose another folder or overwrite=true")
    return out


def write_exported(components: LDMComponents, out_dir: str | Path, model_card: str, overwrite: bool = False) -> Path:
    """Write the folder next to ``out_dir`` first and move it into place, so ``out_dir`` is never half-written."""
    out = check_export_folder(out_dir, overwrite)
    if components.text_encoder is None:
        raise ModelLoadError("cannot export a model without a text encoder")
    with atomic_folder(out) as tmp:
        for name, module in (("autoencoder", components.autoencoder), ("unet", components.unet)):
            _write_json(tmp / name / "config.json", components.configs[name])
            _save_weights(module, tmp / name / NETWORK_WEIGHTS)
        text_cfg = dict(components.configs["text_encoder"])
        text = components.text_encoder
        if text.persist_weights:
            (tmp / "text_encoder").mkdir(parents=True, exist_ok=True)
            _save_weights(text, tmp / "text_encoder" / TEXT_WEIGHTS)
            text_cfg["stored_weights"] = TEXT_WEIGHTS
        _write_json(tmp / "text_encoder" / "config.json", text_cfg)
        _write_json(tmp / SCHEDULER_CONFIG, components.schedule)
        _write_json(
            tmp / INDEX_FILE,
            {
                "_class_name": EXPORTED_CLASS,
                "format_version": FORMAT_VERSION,
                **CLASSES,
                "scale_factor": float(components.scale_factor),
                "latent_shape": list(components.latent_shape),
                "defaults": components.defaults,
                "source": components.source,
            },
        )
        (tmp / "README.md").write_text(model_card, encoding="utf-8")
    return out


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: the exported folder is incomplete (export it again)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path} is not valid JSON ({err})") from err


def _load_weights(module: torch.nn.Module, file: Path) -> None:
    if not file.is_file():
        raise ModelLoadError(f"{file} is missing: the exported folder is incomplete (export it again)")
    try:
        state = load_file(str(file))
    except Exception as err:
        raise ModelLoadError(f"{file} is not a readable safetensors file ({type(err).__name__}: {err})") from err
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelLoadError(f"{file} does not fit {file.parent / 'config.json'}: {str(err).splitlines()[0]}") from err


def read_exported(folder: str | Path, with_text_encoder: bool = True) -> LDMComponents:
    """Components of an exported folder (JSON and safetensors only)."""
    root = Path(folder).expanduser()
    index = _read_json(root / INDEX_FILE)
    if index.get("_class_name") != EXPORTED_CLASS:
        raise ModelLoadError(f"{root / INDEX_FILE} is not a cxr_ldm export (_class_name {index.get('_class_name')!r})")
    ae_cfg = _read_json(root / "autoencoder" / "config.json")
    unet_cfg = _read_json(root / "unet" / "config.json")
    text_cfg = _read_json(root / "text_encoder" / "config.json")
    schedule = _read_json(root / SCHEDULER_CONFIG)
    text = None
    if with_text_encoder:
        stored = text_cfg.get("stored_weights")
        text = build_text_encoder({k: v for k, v in text_cfg.items() if k != "stored_weights"})
        if stored:
            _load_weights(text, root / "text_encoder" / stored)
    check_unet_fits(unet_cfg, ae_cfg, text.width if text is not None else None, str(root))
    autoencoder = AutoencoderKL(**ae_cfg)
    _load_weights(autoencoder, root / "autoencoder" / NETWORK_WEIGHTS)
    unet = DiffusionModelUNet(**unet_cfg)
    _load_weights(unet, root / "unet" / NETWORK_WEIGHTS)
    return LDMComponents(
        autoencoder=autoencoder.eval(),
        unet=unet.eval(),
        text_encoder=text,
        schedule=schedule,
        scale_factor=float(index["scale_factor"]),
        latent_shape=tuple(int(s) for s in index["latent_shape"]),  # type: ignore[arg-type]
        configs={"autoencoder": ae_cfg, "unet": unet_cfg, "text_encoder": text_cfg},
        defaults=dict(index.get("defaults") or {}),
        source={"kind": "exported", "path": str(root.resolve()), "exported_from": index.get("source")},
    )

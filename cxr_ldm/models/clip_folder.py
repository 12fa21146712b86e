"""Read a Hugging Face transformers ``CLIPTextModel`` folder into open_clip's text-tower layout.

The released MONAI chest X-ray LDM conditions on Stable Diffusion 2.1-base's ``text_encoder/`` folder
(``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``): 23 transformer layers whose
``last_hidden_state`` (``final_layer_norm`` of the last layer's output) is the context. That is exactly an
open_clip ``TextTransformer`` with the same number of blocks, read at its *last* block through ``ln_final``,
so the project keeps one text-encoder class and needs no transformers import at run time.
Only JSON and safetensors (or a weights-only ``torch.load`` of the ``.bin``) are read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_PER_LAYER = {
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "layer_norm1.weight": "ln_1.weight",
    "layer_norm1.bias": "ln_1.bias",
    "layer_norm2.weight": "ln_2.weight",
    "layer_norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight",
    "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight",
    "mlp.fc2.bias": "mlp.c_proj.bias",
}


def clip_text_folder(path: str | Path) -> Path | None:
    """The folder holding the CLIPTextModel ``config.json`` (``path`` or its ``text_encoder/``), or None."""
    path = Path(path).expanduser()
    for folder in (path, path / "text_encoder"):
        if (folder / "config.json").is_file():
            return folder
    return None


def read_clip_text_config(folder: Path) -> dict[str, Any]:
    """open_clip ``CLIPTextCfg`` fields (plus ``quick_gelu``) of a transformers CLIP text config."""
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    cfg = raw.get("text_config", raw)  # a full CLIPModel config nests the text side
    model_type = cfg.get("model_type", raw.get("model_type"))
    if model_type not in ("clip_text_model", "clip", None):
        raise ValueError(
            f"{folder / 'config.json'} describes a {model_type!r} model, not a CLIP text encoder "
            "(expected Stable Diffusion 2.1's text_encoder/ folder)"
        )
    act = cfg.get("hidden_act", "quick_gelu")
    if act not in ("gelu", "quick_gelu"):
        raise ValueError(f"{folder / 'config.json'}: hidden_act {act!r} is not supported (gelu, quick_gelu)")
    width = int(cfg.get("hidden_size", 512))
    return {
        "width": width,
        "heads": int(cfg.get("num_attention_heads", 8)),
        "layers": int(cfg.get("num_hidden_layers", 12)),
        "context_length": int(cfg.get("max_position_embeddings", 77)),
        "vocab_size": int(cfg.get("vocab_size", 49408)),
        "mlp_ratio": float(cfg.get("intermediate_size", 4 * width)) / width,
        "quick_gelu": act == "quick_gelu",
    }


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        file = folder / name
        if file.is_file():
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(file))
            return torch.load(file, map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"no text-encoder weights in {folder}: expected {WEIGHT_FILES[0]} or {WEIGHT_FILES[1]} (the text_encoder/ "
        "folder of https://huggingface.co/stabilityai/stable-diffusion-2-1-base)"
    )


def read_clip_text_state(folder: Path, layers: int) -> dict[str, torch.Tensor]:
    """The folder's weights renamed to open_clip ``TextTransformer`` keys (q, k, v fused into ``in_proj``)."""
    state = {k.removeprefix("text_model."): v for k, v in _read_tensors(folder).items()}
    out: dict[str, torch.Tensor] = {
        "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("final_layer_norm.weight"),
        "ln_final.bias": state.pop("final_layer_norm.bias"),
    }
    state.pop("embeddings.position_ids", None)
    for i in range(layers):
        prefix, target = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{target}attn.in_proj_{kind}"] = torch.cat(
                [state.pop(f"{prefix}self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")]
            )
        for source, dest in _PER_LAYER.items():
            out[target + dest] = state.pop(prefix + source)
    leftover = [k for k in state if _LAYER.match(k) or k.startswith(("embeddings.", "final_layer_norm"))]
    if leftover:
        raise ValueError(f"{folder}: weights for more layers than config.json declares, e.g. {leftover[:2]}")
    return out

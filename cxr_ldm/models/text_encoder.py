"""Frozen OpenCLIP text tower that turns token ids into the cross-attention context of the diffusion UNet.

Stable Diffusion 2.x conditions on the *penultimate* transformer block of OpenCLIP ViT-H-14's text tower,
passed through ``ln_final``: one 1024-d vector per token, 77 x 1024. This module reproduces that with
open_clip's own ``TextTransformer`` so that the official weights load unchanged.

Two ways to get weights, never a silent random tower:

* pretrained (``model_name`` + ``weights_path`` or the Hugging Face cache): read from a local open_clip
  checkpoint; these weights are *not* stored in the LDM checkpoint (``persist_weights`` is False), they are
  read again from the same file when the LDM is loaded;
* a transformers ``CLIPTextModel`` folder given as ``weights_path`` (Stable Diffusion 2.1's ``text_encoder/``,
  as the released MONAI bundle uses it): its shape comes from the folder's ``config.json`` and the context is
  its ``last_hidden_state`` (the folder already ends at SD's penultimate layer), read through ``clip_folder.py``;
* ``seed``: a small random tower for tests and CPU demos, fixed by the seed; its weights *are* stored in
  the LDM checkpoint so a trained model samples the same way later.

The encoder is frozen, always in eval mode and runs under ``torch.no_grad`` (the reference scripts ran it
with gradients on).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxr_ldm.models.clip_folder import clip_text_folder, read_clip_text_config, read_clip_text_state

# Files of an open_clip checkpoint on the Hugging Face hub, preferred first (open_clip's own order).
HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# Keys of a full CLIP state dict that do not belong to the text tower.
_NON_TEXT_PREFIXES = ("visual.", "logit_scale", "logit_bias")


class TextEncoderWeightsNotFound(FileNotFoundError):
    """Raised when pretrained text-encoder weights are neither at ``weights_path`` nor in the HF cache."""


def _build_text_tower(model_name: str | None, text_cfg: Mapping[str, Any] | None) -> nn.Module:
    """An open_clip ``TextTransformer`` from a named open_clip config, optionally overridden by ``text_cfg``."""
    from open_clip import get_model_config
    from open_clip.model import CLIPTextCfg
    from open_clip.model import _build_text_tower as build

    cfg: dict[str, Any] = {}
    embed_dim = None
    quick_gelu = False
    if model_name is not None:
        model_cfg = get_model_config(model_name)
        if model_cfg is None:
            raise ValueError(f"unknown open_clip model config {model_name!r}")
        cfg.update(model_cfg["text_cfg"])
        embed_dim = model_cfg["embed_dim"]
        quick_gelu = bool(model_cfg.get("quick_gelu", False))
    cfg.update(dict(text_cfg or {}))
    quick_gelu = bool(cfg.pop("quick_gelu", quick_gelu))
    embed_dim = cfg.pop("embed_dim", embed_dim) or cfg.get("width", CLIPTextCfg.width)
    if cfg.get("hf_model_name"):
        raise ValueError(
            "Hugging Face text towers are not supported; use an open_clip TextTransformer config"
        )
    # Per-token states need no pooled projection: leave it out (the checkpoint's copy is skipped on loading).
    cfg["proj_type"] = "none"
    return build(embed_dim, CLIPTextCfg(**cfg), quick_gelu=quick_gelu)


def find_weights(
    weights_path: str | os.PathLike | None,
    hf_hub_id: str | None,
    allow_download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Locate an open_clip checkpoint file *before* building a large model, or raise a clear error.

    ``weights_path`` wins; else the Hugging Face cache (``cache_dir`` or the default ``HF_HUB_CACHE``) is
    searched for ``hf_hub_id``'s open_clip files, as open_clip itself would find them.
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if path.is_file():
            return path
        if clip_text_folder(path) is not None:
            return clip_text_folder(path)
        raise TextEncoderWeightsNotFound(
            f"text encoder weights not found at weights_path={str(path)!r}. Put the open_clip checkpoint there "
            f"(e.g. {HF_WEIGHT_FILES[1]} or {HF_WEIGHT_FILES[0]} from https://huggingface.co/{hf_hub_id or '<repo>'}),"
            " or give a transformers CLIPTextModel folder (config.json + model.safetensors, e.g. the text_encoder/ "
            "folder of https://huggingface.co/stabilityai/stable-diffusion-2-1-base), or fix text_encoder.weights_path."
        )
    if hf_hub_id is None:
        raise TextEncoderWeightsNotFound(
            "no text encoder weights: set text_encoder.weights_path or hf_hub_id"
        )

    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    for filename in HF_WEIGHT_FILES:
        cached = try_to_load_from_cache(hf_hub_id, filename, cache_dir=cache_dir)
        if isinstance(cached, str) and Path(cached).is_file():
            return Path(cached)
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    if allow_download and not offline:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(hf_hub_id, HF_WEIGHT_FILES[1], cache_dir=cache_dir))
    raise TextEncoderWeightsNotFound(
        f"text encoder weights for {hf_hub_id!r} not found. Download {HF_WEIGHT_FILES[1]} (or "
        f"{HF_WEIGHT_FILES[0]}) from https://huggingface.co/{hf_hub_id} and either set "
        f"text_encoder.weights_path=/path/to/{HF_WEIGHT_FILES[1]} or place it in the Hugging Face cache "
        f"({cache_dir or HF_HUB_CACHE}, e.g. `huggingface-cli download {hf_hub_id} {HF_WEIGHT_FILES[1]}`)."
    )


def load_text_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Text-tower tensors of a full open_clip CLIP checkpoint (``.bin``/``.pt`` or ``.safetensors``).

    Only the text keys are read into memory: the visual tower of ViT-H-14 is 2.5 GB we do not need.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = [k for k in f.keys() if not k.removeprefix("module.").startswith(_NON_TEXT_PREFIXES)]
            state = {k: f.get_tensor(k) for k in keys}
    else:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith(_NON_TEXT_PREFIXES):
            continue
        out[key.removeprefix("text.")] = value  # CustomTextCLIP nests the tower under "text."
    return out


class FrozenOpenCLIPTextEncoder(nn.Module):
    """Token ids ``[B, 77]`` -> per-token states ``[B, 77, width]`` of a frozen open_clip text tower.

    Args:
        model_name: open_clip model config providing the tower shape, e.g. ``"ViT-H-14"`` (SD 2.1).
        text_cfg: fields of open_clip's ``CLIPTextCfg`` overriding / replacing the named config
            (``width``, ``heads``, ``layers``, ``context_length``, ``vocab_size``, optionally ``embed_dim``).
        weights_path: local open_clip checkpoint (full CLIP state dict; only text keys are used).
        hf_hub_id: Hugging Face repository whose cached open_clip checkpoint is used when ``weights_path``
            is not set.
        seed: build a random tower fixed by this seed instead of loading weights (tests, CPU demos).
        layer: ``"penultimate"`` (SD 2.x) or ``"last"``; the chosen block's output goes through ``ln_final``.
        allow_download: download from the hub when not cached (off by default; ``HF_HUB_OFFLINE`` wins).
        cache_dir: Hugging Face cache to search instead of the default one.
    """

    def __init__(
        self,
        model_name: str | None = None,
        text_cfg: Mapping[str, Any] | None = None,
        weights_path: str | None = None,
        hf_hub_id: str | None = None,
        seed: int | None = None,
        layer: str = "penultimate",
        allow_download: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if layer not in ("penultimate", "last"):
            raise ValueError(f"layer must be 'penultimate' or 'last', got {layer!r}")
        pretrained = seed is None
        if not pretrained and weights_path is not None:
            raise ValueError("give either `seed` (random tower) or `weights_path` (pretrained), not both")
        folder = clip_text_folder(weights_path) if weights_path is not None and pretrained else None
        if model_name is None and not text_cfg and folder is None:
            raise ValueError("the text encoder needs `model_name` (open_clip config) or `text_cfg`")
        # Locate the file first: a missing file must fail before a 354M-parameter tower is allocated.
        path = find_weights(weights_path, hf_hub_id, allow_download, cache_dir) if pretrained else None
        folder_state = None
        if path is not None and path.is_dir():
            # transformers CLIPTextModel folder: its config fixes the shape, its last layer is the context
            text_cfg, model_name, layer = read_clip_text_config(path), None, "last"
            try:
                folder_state = read_clip_text_state(path, int(text_cfg["layers"]))
            except KeyError as err:
                raise RuntimeError(f"{path} is not a CLIPTextModel folder: weight {err} is missing") from err

        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.tower = _build_text_tower(model_name, text_cfg)
        if folder_state is not None:
            self._check_and_load(folder_state, path)
        elif path is not None:
            self._check_and_load(load_text_state_dict(path), path)

        self.layer = layer
        self.weights_source = str(path) if path is not None else f"random(seed={seed})"
        # Pretrained weights live in their own file; only a seeded tower is stored in the LDM checkpoint.
        self.persist_weights = not pretrained
        self.requires_grad_(False)
        super().train(False)

    @property
    def width(self) -> int:
        return int(self.tower.width)

    @property
    def context_length(self) -> int:
        return int(self.tower.context_length)

    def _check_and_load(self, state: dict[str, torch.Tensor], path: Path) -> None:
        expected = self.tower.state_dict()
        state.pop("text_projection", None)  # pooled projection, unused for per-token states
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise RuntimeError(
                f"{path} does not match the configured open_clip text tower: {len(missing)} missing keys "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
            )
        bad = [k for k, v in state.items() if v.shape != expected[k].shape]
        if bad:
            raise RuntimeError(
                f"{path}: shapes differ from the configured tower for {bad[:3]} "
                f"(e.g. {tuple(state[bad[0]].shape)} vs {tuple(expected[bad[0]].shape)})"
            )
        self.tower.load_state_dict(state, strict=True)

    def train(self, mode: bool = True) -> FrozenOpenCLIPTextEncoder:
        """Stay in eval mode whatever the parent asks: the encoder is frozen."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"expected token ids [B, {self.context_length}], got {tuple(tokens.shape)}")
        n_blocks = len(self.tower.transformer.resblocks)
        index = n_blocks - 2 if self.layer == "penultimate" else n_blocks - 1
        out = self.tower.forward_intermediates(
            tokens.long(),
            indices=[index],
            stop_early=True,
            normalize_intermediates=True,  # applies ln_final to the taken block's output
            intermediates_only=True,
            output_fmt="NLC",
        )
        return out["text_intermediates"][0]


def build_text_encoder(config: Mapping[str, Any]) -> FrozenOpenCLIPTextEncoder:
    """The text encoder from a plain config dict (``conf/text_encoder/*.yaml``); ``name`` is only a label."""
    kwargs = {k: v for k, v in dict(config).items() if k != "name"}
    return FrozenOpenCLIPTextEncoder(**kwargs)


def sd21_text_encoder_config(path: str | os.PathLike) -> dict[str, Any]:
    """Config of Stable Diffusion 2.1's text encoder read from ``path``.

    A transformers ``CLIPTextModel`` folder (SD 2.1's ``text_encoder/``, or the SD root holding it) is read as it
    is; a file is taken as the open_clip ViT-H-14 checkpoint (``open_clip_pytorch_model.bin``), read at the
    penultimate block. A path that is neither raises ``TextEncoderWeightsNotFound`` naming it.
    """
    resolved = Path(path).expanduser()
    folder = clip_text_folder(resolved)
    if folder is not None:
        return {"name": "sd21", "weights_path": str(folder.resolve())}
    if resolved.is_file():
        return {"name": "sd21", "model_name": "ViT-H-14", "weights_path": str(resolved.resolve()), "layer": "penultimate"}
    find_weights(resolved, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K")  # raises with the message users need
    raise AssertionError("unreachable")

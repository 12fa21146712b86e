"""The GPU fast path: switches that change how the networks compute, never what they compute.

``model.speed`` holds one switch per technique, each ``true``, ``false`` or ``auto`` (= on when the trainer's
device is a CUDA GPU, off on CPUs where they do not pay or do not exist); ``model.compile`` compiles the trained
network. Measured gains and costs: docs/benchmarks.md.

* ``tf32``: float32 matmuls on TensorFloat-32 tensor cores (``torch.set_float32_matmul_precision("high")``;
  cuDNN convolutions use TF32 by default already). Affects what runs outside bf16 autocast.
* ``sdpa``: MONAI's attention blocks call ``F.scaled_dot_product_attention`` (their ``use_flash_attention``)
  instead of an explicit softmax(QK^T)V; PyTorch picks the kernel (flash, memory-efficient, cuDNN or math).
* ``channels_last``: NHWC weights for the convolutional networks (tensor-core convolutions want NHWC).
* ``fused_adam``: ``fused=True`` for Adam / AdamW (one kernel per step instead of one per parameter).
* ``frozen_bf16``: the frozen pretrained text tower is stored in bf16 (its weights are read from their own
  file, never saved in our checkpoints). Frozen weights that checkpoints store (the stage-1 autoencoder, a
  seeded text tower) stay float32; under ``bf16-mixed`` autocast runs their convolutions and matmuls in bf16.

``model.compile``: ``false``, ``true`` or a dict of ``torch.compile`` arguments (e.g. ``{mode: max-autotune}``,
``{backend: aot_eager}`` for CPU tests). It uses ``nn.Module.compile()``, which compiles in place: the module
stays the same object, its state-dict keys keep their names (no ``_orig_mod.`` prefix), so checkpoints of
compiled and eager runs load into each other and resume exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

SPEED_SWITCHES = ("tf32", "sdpa", "channels_last", "fused_adam", "frozen_bf16")


@dataclass(frozen=True)
class Speed:
    """The resolved switches for one device (``model.speed`` with ``auto`` decided)."""

    tf32: bool = False
    sdpa: bool = False
    channels_last: bool = False
    fused_adam: bool = False
    frozen_bf16: bool = False
    compile: dict[str, Any] | None = None


def resolve_speed(
    options: Mapping[str, Any] | None, compile_option: bool | Mapping[str, Any] | None, device: torch.device
) -> Speed:
    """Decide every switch for ``device``: ``auto`` means on for CUDA devices only."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(SPEED_SWITCHES))
    if unknown:
        raise ValueError(f"unknown model.speed switch(es) {unknown}; known: {list(SPEED_SWITCHES)}")
    values = {}
    for name in SPEED_SWITCHES:
        value = options.get(name, "auto")
        if value == "auto":
            value = torch.device(device).type == "cuda"
        if not isinstance(value, bool):
            raise ValueError(f"model.speed.{name} must be true, false or auto, got {value!r}")
        values[name] = value
    return Speed(**values, compile=compile_kwargs(compile_option))


def compile_kwargs(option: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``torch.compile`` keyword arguments for ``model.compile``, or None when off."""
    if option is None or option is False:
        return None
    if option is True:
        return {}
    if isinstance(option, Mapping):
        return dict(option)
    raise ValueError(f"model.compile must be true, false or a dict of torch.compile arguments, got {option!r}")


def use_sdpa(module: nn.Module, enabled: bool = True) -> int:
    """Switch MONAI's attention blocks (``SABlock``, ``CrossAttentionBlock``) to SDPA; returns how many."""
    count = 0
    for block in module.modules():
        if not isinstance(getattr(block, "use_flash_attention", None), bool):
            continue
        if enabled and (getattr(block, "save_attn", False) or getattr(block, "rel_positional_embedding", None)):
            continue  # MONAI refuses SDPA with saved attention maps or relative position embeddings
        block.use_flash_attention = enabled
        count += 1
    return count


def fused_factory(factory: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    """``factory`` with ``fused=True`` when it builds Adam / AdamW and does not set ``fused`` itself."""
    base = factory.func if isinstance(factory, partial) else factory
    keywords = factory.keywords if isinstance(factory, partial) else {}
    if base in (torch.optim.Adam, torch.optim.AdamW) and keywords.get("fused") is None:
        return partial(factory, fused=True)
    return factory


def apply_speed(
    speed: Speed,
    networks: Iterable[nn.Module] = (),
    compiled: Iterable[nn.Module] = (),
    frozen_bf16: Iterable[nn.Module] = (),
) -> None:
    """Apply the resolved switches: global TF32, SDPA and NHWC on ``networks``, bf16 ``frozen_bf16``, compile."""
    if speed.tf32:
        torch.set_float32_matmul_precision("high")
    for network in networks:
        if speed.sdpa:
            use_sdpa(network)
        if speed.channels_last:
            network.to(memory_format=torch.channels_last)
    if speed.frozen_bf16:
        for network in frozen_bf16:
            network.to(torch.bfloat16)
    if speed.compile is not None:
        for network in compiled:
            network.compile(**speed.compile)

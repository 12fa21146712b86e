"""Configuration values as plain Python containers (for hyper-parameters and checkpoints)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def to_plain(value: Any) -> Any:
    """Hyper-parameters as plain Python containers, so checkpoints load with ``torch.load(weights_only=True)``.

    OmegaConf containers become dicts/lists (resolved), mappings and sequences are converted recursively (tuples
    become lists) and a ``functools.partial`` (Hydra ``_partial_``) becomes its ``_target_`` dict again. Anything
    else, ``None`` included, is returned as it is.
    """
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, functools.partial):
        func = value.func
        return {
            "_target_": f"{func.__module__}.{func.__qualname__}",
            "_partial_": True,
            **to_plain(value.keywords),
        }
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value

"""The sha256 digests the caches and manifests are keyed by: of a file, of a JSON value, of a state dict.

Each value written into a cache key or a manifest keeps its own format (truncation length, JSON separators,
key order, the state-dict separator) as arguments here, so existing cache files stay valid.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

BLOCK_SIZE = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(BLOCK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def json_digest(
    value: Any,
    length: int | None = None,
    *,
    sort_keys: bool = False,
    separators: tuple[str, str] | None = None,
    default: Callable[[Any], Any] | None = str,
) -> str:
    """Hex sha256 of ``json.dumps(value, ...)`` (UTF-8), its first ``length`` digits (``None``: all 64).

    ``default`` turns non-JSON values into JSON ones (their ``str`` unless told otherwise); ``sort_keys`` and
    ``separators`` are ``json.dumps``'s.
    """
    blob = json.dumps(value, sort_keys=sort_keys, separators=separators, default=default)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor], separator: str = ":", prefix: bytes = b"") -> str:
    """Hex sha256 of ``prefix`` and then, by sorted name, each tensor's ``name|dtype|shape`` line (joined by
    ``separator``) and its bytes (on the CPU, contiguous)."""
    digest = hashlib.sha256(prefix)
    for name, tensor in sorted(state_dict.items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(separator.join((name, str(value.dtype), str(tuple(value.shape)))).encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

"""The ``device=`` option of the commands."""

from __future__ import annotations

import torch


def resolve_device(device: str, option: str = "device") -> torch.device:
    """``auto`` is the first GPU when there is one, else the CPU; anything else is passed to ``torch.device``.
    Errors name ``option``, the command's option that gave ``device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"{option}={device!r} is not a device (auto, cpu, cuda, cuda:1, ...)") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option}={device!r} but no CUDA GPU is visible: use {option}=cpu or {option}=auto")
    return resolved

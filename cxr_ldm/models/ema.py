"""Exponential moving average of a network's weights, kept as a frozen copy of the network.

The copy is a real submodule, so it is saved in checkpoints, moved between devices with its owner and used
directly for sampling and export (no weight swapping).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """Decay used for update number ``step`` (0-based): ``min(decay, (1 + step) / (10 + step))`` with warm-up.

    The warm-up lets the average follow the fast early changes instead of staying near the initial weights.
    """
    return min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay


class EMA(nn.Module):
    """``ema = d * ema + (1 - d) * online`` after each optimizer step; buffers (e.g. norms' stats) are copied."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.module = copy.deepcopy(model).requires_grad_(False).eval()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> EMA:
        """The averaged copy is only evaluated, never trained."""
        return super().train(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """Average ``model``'s current weights in; returns the decay that was used."""
        d = ema_decay_at(int(self.num_updates), self.decay, self.warmup)
        ema_params = dict(self.module.named_parameters())
        for name, p in model.named_parameters():
            ema_params[name].lerp_(p.detach().to(ema_params[name].dtype), 1.0 - d)
        ema_buffers = dict(self.module.named_buffers())
        for name, b in model.named_buffers():
            ema_buffers[name].copy_(b)
        self.num_updates += 1
        return d

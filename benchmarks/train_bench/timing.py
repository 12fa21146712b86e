"""The timed window of a side's steps and the global switches every side sets alike."""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class Timing:
    seconds: float = 0.0
    first_step_s: float = 0.0  # includes compilation and cuDNN autotuning on the first round
    peak_gib: float | None = None


@dataclass
class Window:
    """Start/stop of the timed steps: after ``warmup`` steps, for ``steps`` steps."""

    warmup: int
    steps: int
    device: torch.device
    seen: int = 0
    timing: Timing = field(default_factory=Timing)
    _start: float = 0.0
    _first: float = 0.0

    def before_step(self) -> None:
        if self.seen == 0:
            self._first = time.perf_counter()
        if self.seen == self.warmup:
            sync(self.device)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            self._start = time.perf_counter()

    def after_step(self) -> None:
        self.seen += 1
        if self.seen == 1:
            sync(self.device)
            self.timing.first_step_s = time.perf_counter() - self._first
        if self.seen == self.warmup + self.steps:
            sync(self.device)
            self.timing.seconds = time.perf_counter() - self._start
            if self.device.type == "cuda":
                self.timing.peak_gib = torch.cuda.max_memory_allocated(self.device) / 2**30


class WindowCallback(L.Callback):
    def __init__(self, window: Window) -> None:
        self.window = window

    def on_train_batch_start(self, *args: Any) -> None:
        self.window.before_step()

    def on_train_batch_end(self, *args: Any) -> None:
        self.window.after_step()


def set_global_flags(tf32: bool, cudnn_benchmark: bool) -> None:
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.benchmark = cudnn_benchmark


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


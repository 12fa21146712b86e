"""Test instrument loaded into training runs (``+callbacks.fault._target_=fault_points.FaultPoint``).

It makes a run stop at one chosen moment and tells the test so: it writes ``<marker_dir>/<at>`` and sleeps,
and the test then kills the process (SIGKILL, or sends SIGINT). Under DDP every rank runs it; ``rank`` (default
-1: every rank) limits ``batch_start`` and ``nan_batch`` to one global rank, whose marker is then ``<at>.rank<r>``.
Moments (``at``):

* ``batch_start``: at the start of the training batch that begins at ``step`` (between two steps);
* ``validation``: in the first validation batch of epoch ``epoch`` (not the sanity check);
* ``checkpoint_write``: halfway through writing the file whose name holds ``name``, at training step ``step``:
  ``torch.save`` is slowed there (half the bytes written and fsynced, then the pause), the disk a slow
  network file system gives;
* ``nan_batch``: the training batch at ``step`` gets a NaN pixel (a corrupted batch); its ``dicom_id``s are
  written to the marker; no pause;
* ``fill_disk``: at the end of validation of epoch ``epoch`` (before ModelCheckpoint writes) the file system
  of ``fill_path`` is filled up with a file there (a real full disk: a small tmpfs), or, where no tmpfs could
  be mounted (``fill_path`` empty), every file this process writes is limited to ``limit_bytes`` with
  ``RLIMIT_FSIZE`` (the kernel refuses larger writes with EFBIG); no pause, the run goes on and fails.
"""

from __future__ import annotations

import io
import os
import resource
import signal
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class FaultPoint(Callback):
    def __init__(
        self,
        marker_dir: str,
        at: str,
        step: int = -1,
        epoch: int = -1,
        name: str = "",
        seconds: float = 300.0,
        fill_path: str = "",
        limit_bytes: int = 100_000,
        rank: int = -1,
    ) -> None:
        if at not in ("batch_start", "validation", "checkpoint_write", "fill_disk", "nan_batch"):
            raise ValueError(f"unknown fault point {at!r}")
        self.marker_dir, self.at, self.step, self.epoch = Path(marker_dir), at, int(step), int(epoch)
        self.name, self.seconds, self.fill_path, self.limit_bytes = name, float(seconds), fill_path, int(limit_bytes)
        self.rank = int(rank)
        self._trainer: Trainer | None = None
        self._done = False

    def _here(self, trainer: Trainer) -> bool:
        return self.rank < 0 or trainer.global_rank == self.rank

    def _marker(self) -> Path:
        return self.marker_dir / (self.at if self.rank < 0 else f"{self.at}.rank{self.rank}")

    def _pause(self) -> None:
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        self._marker().write_text(str(os.getpid()))
        time.sleep(self.seconds)  # the test kills the process during this sleep

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer
        if self.at == "checkpoint_write":
            original = torch.save

            def slow_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
                target = getattr(f, "name", "")
                due = isinstance(obj, dict) and obj.get("global_step") == self.step and self.name in str(target)
                if not due or not hasattr(f, "write") or self._done:
                    return original(obj, f, *args, **kwargs)
                self._done = True
                buffer = io.BytesIO()
                original(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                self._pause()
                f.write(data[len(data) // 2 :])
                return None

            torch.save = slow_save

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if not self._here(trainer):
            return
        if self.at == "nan_batch" and trainer.global_step == self.step and not self._done:
            self._done = True  # a corrupted batch: NaN pixels; its dicom_ids go to the marker for the test
            batch["image"][0, 0, 0, 0] = float("nan")
            self.marker_dir.mkdir(parents=True, exist_ok=True)
            self._marker().write_text("\n".join(str(i) for i in batch["dicom_id"]))
            return
        if self.at == "batch_start" and trainer.global_step == self.step and not self._done:
            self._done = True
            self._pause()

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:  # fmt: skip
        if self.at == "validation" and not trainer.sanity_checking and trainer.current_epoch == self.epoch:
            if not self._done:
                self._done = True
                self._pause()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at != "fill_disk" or trainer.sanity_checking or trainer.current_epoch != self.epoch or self._done:
            return
        self._done = True
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        (self.marker_dir / self.at).write_text(str(os.getpid()))
        if not self.fill_path:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
            return
        chunk = b"\0" * (1 << 16)
        with open(self.fill_path, "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(chunk)
            except OSError:
                pass
            try:  # the last few bytes too
                while True:
                    filler.write(b"\0" * 512)
            except OSError:
                pass

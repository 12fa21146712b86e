"""Ctrl-C (or a plain ``kill``) during a local training run writes ``last.ckpt`` before the process leaves.

Outside SLURM, :class:`CheckpointOnInterrupt` owns ``SIGINT`` and ``SIGTERM`` while the model trains, with the
machinery of :class:`~cxr_ldm.callbacks.slurm_requeue.RequeueOnSignal`: the handler only sets a flag; after the current
training batch all ranks agree on it, write ``<run>/checkpoints/last.ckpt`` together (atomically, see
``utils/checkpoints.py``) and leave with exit status 130 (Ctrl-C) or 143 (``SIGTERM``), printing how to resume.
A second Ctrl-C while waiting for the batch to end stops at once, as Python does by default (nothing is
written then; the previous ``last.ckpt`` stays).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch import LightningModule, Trainer

from cxr_ldm.callbacks.slurm_requeue import _NO_SIGNAL, RequeueOnSignal

log = logging.getLogger(__name__)


class TrainingInterrupted(SystemExit):
    """Leaves the process after the interrupt checkpoint (a ``SystemExit``: Hydra records no failure)."""


class CheckpointOnInterrupt(RequeueOnSignal):
    """``last.ckpt`` on Ctrl-C / ``SIGTERM`` after the current training batch (module docstring)."""

    def __init__(self, dirpath: str | Path) -> None:
        super().__init__(dirpath, requeue_signal="INT", requeue=False)
        self._signal_name = ""

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self._received != _NO_SIGNAL and not self._exiting:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self._signal_name = signal.Signals(signum).name
        super()._handler(signum, frame)
        if signum == signal.SIGINT:
            print("\nCtrl-C: writing last.ckpt after the current training batch (Ctrl-C again to stop at once)",
                  flush=True)  # fmt: skip

    def _announce(self, trainer: Trainer) -> None:
        log.info("Ctrl-C or SIGTERM writes last.ckpt to %s after the current training batch", self.dirpath)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._agreed_signal(trainer) == _NO_SIGNAL:
            return
        self._write_signal_checkpoint(trainer)
        run_dir = self.dirpath.parent
        message = (
            f"{self._signal_name or 'interrupt'}: wrote {self.ckpt_path} at step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}); resume with: python -m cxr_ldm.train <the same options> ckpt_path=last "
            f"hydra.run.dir={run_dir}"
        )
        log.info(message)
        if trainer.is_global_zero:
            print(message, flush=True)
        raise TrainingInterrupted(143 if self._signal_name == "SIGTERM" else 130)

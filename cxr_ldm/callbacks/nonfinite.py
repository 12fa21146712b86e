"""A NaN or Inf loss stops the run (or skips the step), naming the step, the batch and the last good checkpoint.

A non-finite loss is checked before its backward pass (``on_before_backward``, which automatic and manual
optimization both go through), so with ``action="stop"`` no optimizer step and no checkpoint follows it: the
run ends with :class:`NonFiniteLossError` naming the step, the ``dicom_id``s of the batch, and the newest
checkpoint on disk (written before, so its weights are good). With ``action="skip"`` the gradients of that
batch are dropped before every optimizer step it reaches (``on_before_optimizer_step``) and the buffers its
forward pass moved (BatchNorm statistics, a measured scale factor) are put back, so the weights do not
change, a warning names the step and the batch, and training goes on (gradients that are NaN/Inf, e.g. on the
DDP ranks whose own loss was finite, are skipped the same way, so all ranks skip together); more than ``max_skips`` skipped batches
stop the run as above (a model that diverged does not come back by skipping).

Whatever the loss said, a checkpoint whose weights or buffers hold NaN/Inf is never written (``on_save_checkpoint``
raises before the file is opened), so a good ``last.ckpt`` is never replaced by a broken one.

Under ``16-mixed`` the GradScaler's own overflow skips (infinite gradients, finite loss) are normal and left
to it; only the loss is checked there. Under DDP a rank that stops takes the job down (the launcher ends the
other ranks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training met a NaN/Inf loss; the message names the step, the batch and the last good checkpoint."""


class NonFiniteWeightsError(RuntimeError):
    """A checkpoint was about to be written with NaN/Inf weights; nothing was written."""


def _ids(batch: Any) -> list[str]:
    if isinstance(batch, dict) and "dicom_id" in batch:
        return [str(i) for i in batch["dicom_id"]]
    return []


def _finite(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() or bool(torch.isfinite(tensor.detach()).all())


def last_good_checkpoint(trainer: Trainer) -> Path | None:
    """The newest checkpoint file the run's checkpoint callbacks know of (written before the failure)."""
    paths = []
    for callback in trainer.checkpoint_callbacks:
        for attribute in ("last_model_path", "best_model_path"):
            value = getattr(callback, attribute, "")
            if value and Path(value).is_file():
                paths.append(Path(value))
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


class NonFiniteGuard(Callback):
    """Stop on (or skip) a NaN/Inf loss, and refuse checkpoints with NaN/Inf weights (module docstring).

    Args:
        action: ``stop`` (default) or ``skip``.
        max_skips: with ``skip``, stop once more than this many batches were skipped in the run.
    """

    def __init__(self, action: str = "stop", max_skips: int = 10) -> None:
        if action not in ("stop", "skip"):
            raise ValueError(f"nonfinite.action must be stop or skip, got {action!r}")
        if max_skips < 0:
            raise ValueError(f"nonfinite.max_skips must be >= 0, got {max_skips}")
        self.action = action
        self.max_skips = int(max_skips)
        self.skipped: list[dict[str, Any]] = []
        self._batch_ids: list[str] = []
        self._batch_idx = -1
        self._skip_this_batch = False
        self._buffers: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ what the batch was
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # buffers that are NaN on purpose (the LDM's scale factor before it is measured) are not a failure
        self._nan_on_purpose = {name for name, b in pl_module.named_buffers() if not _finite(b)}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch_ids, self._batch_idx, self._skip_this_batch = _ids(batch), batch_idx, False
        if self.action == "skip":  # the forward pass moves buffers (BatchNorm statistics, a measured scale factor)
            self._buffers = {n: b.detach().clone() for n, b in pl_module.named_buffers() if b.is_floating_point()}

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        if self._skip_this_batch:  # before ModelCheckpoint's hook (checkpoint callbacks run last)
            with torch.no_grad():
                for name, buffer in pl_module.named_buffers():
                    if name in self._buffers:
                        buffer.copy_(self._buffers[name])

    def _where(self, trainer: Trainer) -> str:
        ids = ", ".join(self._batch_ids[:16]) + (" ..." if len(self._batch_ids) > 16 else "")
        return (
            f"step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx}"
            + (f"; dicom_id {ids}" if ids else "") + ")"
        )

    def _stop(self, trainer: Trainer, what: str) -> None:
        good = last_good_checkpoint(trainer)
        where = (f"the last good checkpoint is {good}: resume from it with ckpt_path={good} (e.g. with a lower learning "
                 f"rate)") if good else "no checkpoint was written before it"  # fmt: skip
        raise NonFiniteLossError(
            f"{what} at {self._where(trainer)}; nothing was trained on it and no checkpoint written after it; {where}; "
            f"or set nonfinite.action=skip to skip such batches"
        )

    # ------------------------------------------------------------------ the checks
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        if torch.isfinite(loss.detach()).all():
            return
        what = f"non-finite training loss ({loss.detach().float().flatten()[0].item()})"
        if self.action == "stop":
            self._stop(trainer, what)
        if not self._skip_this_batch:
            self._skip_this_batch = True
            self.skipped.append({"step": trainer.global_step, "epoch": trainer.current_epoch, "dicom_id": self._batch_ids})
            log.warning("%s at %s: batch skipped (%d so far)", what, self._where(trainer), len(self.skipped))
            if len(self.skipped) > self.max_skips:
                self._stop(trainer, f"{what}; more than nonfinite.max_skips={self.max_skips} batches skipped, the last")

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # gradients are averaged over DDP ranks before this hook: a NaN on one rank is a NaN on all, so every
        # rank skips the same step; under a GradScaler infinite gradients are its business
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        bad_grads = scaler is None and not all(torch.isfinite(p.grad).all() for p in params)
        if bad_grads and not self._skip_this_batch:
            if self.action == "stop":
                self._stop(trainer, "non-finite gradients")
            self.on_before_backward(trainer, pl_module, torch.tensor(float("nan")))  # count and report the skip
        if self._skip_this_batch:
            for param in params:
                param.grad = None  # no gradient: the optimizer leaves the parameter (and its state) alone

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        tensors = [*pl_module.named_parameters(), *((n, b) for n, b in pl_module.named_buffers()
                                                    if n not in getattr(self, "_nan_on_purpose", set()))]  # fmt: skip
        for name, param in tensors:
            if not _finite(param):
                good = last_good_checkpoint(trainer)
                raise NonFiniteWeightsError(
                    f"not writing a checkpoint at step {trainer.global_step}: the weights hold NaN/Inf ({name}); "
                    + (f"the last good checkpoint, {good}, is kept" if good else "no earlier checkpoint exists")
                )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = list(state_dict.get("skipped", []))

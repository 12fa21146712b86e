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
to it; only the loss is checked there.

Under DDP the ranks agree before each backward pass: every rank's "my loss is not finite" flag is summed over
the ranks (one small all-reduce), so a NaN on any rank stops (or skips) every rank at the same step, and the
first bad rank's loss, batch index and ``dicom_id``s are broadcast to all. Rank 0 reports it, once: with
``stop`` it raises :class:`NonFiniteLossError` naming that rank (the command prints it as its one line, and
rank 0's ``run_info.json`` records it); the other ranks raise :class:`NonFiniteLossReportedByRankZero`, which the
command ends with exit status 1 and no message. A rank that rank 0 started itself (Lightning's launcher, no
SLURM or torchrun) leaves after rank 0 has exited, since Lightning's launcher SIGKILLs rank 0 as soon as one of
its children fails. With ``skip`` rank 0 logs the warning and every rank records the same skip.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from cxr_ldm.utils.distributed import outlive_launcher

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training met a NaN/Inf loss; the message names the step, the batch and the last good checkpoint."""


class NonFiniteLossReportedByRankZero(NonFiniteLossError):
    """Under DDP, on the ranks other than 0: the run stops with rank 0's :class:`NonFiniteLossError`, which rank 0
    reports; the command ends this rank with exit status 1 and no message of its own."""


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
        self._launcher_pid = os.getpid()

    # ------------------------------------------------------------------ what the batch was
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # buffers that are NaN on purpose (the LDM's scale factor before it is measured) are not a failure
        self._nan_on_purpose = {name for name, b in pl_module.named_buffers() if not _finite(b)}
        if trainer.world_size > 1:  # rank 0's process: the launcher of the ranks it started itself
            self._launcher_pid = int(trainer.strategy.broadcast(os.getpid(), src=0))

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

    def _where(self, trainer: Trainer, ids: list[str] | None = None, batch_idx: int | None = None) -> str:
        ids = self._batch_ids if ids is None else ids
        shown = ", ".join(ids[:16]) + (" ..." if len(ids) > 16 else "")
        return (
            f"step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{self._batch_idx if batch_idx is None else batch_idx}" + (f"; dicom_id {shown}" if shown else "") + ")"
        )

    def _stop(self, trainer: Trainer, what: str, where: str | None = None) -> None:
        good = last_good_checkpoint(trainer)
        last = (f"the last good checkpoint is {good}: resume from it with ckpt_path={good} (e.g. with a lower learning "
                f"rate)") if good else "no checkpoint was written before it"  # fmt: skip
        together = "every rank stopped at that step; " if trainer.world_size > 1 else ""
        message = (
            f"{what} at {where or self._where(trainer)}; {together}nothing was trained on it and no checkpoint written "
            f"after it; {last}; or set nonfinite.action=skip to skip such batches"
        )
        if trainer.global_rank == 0:
            raise NonFiniteLossError(message)
        outlive_launcher(self._launcher_pid)  # else the launcher would SIGKILL rank 0 before it reports
        raise NonFiniteLossReportedByRankZero(message)

    def _agree(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> dict[str, Any] | None:
        """None if the loss is finite on every rank; else the first bad rank's rank, loss, batch and ids."""
        bad = not bool(torch.isfinite(loss.detach()).all())
        value = loss.detach().float().flatten()[0].item() if bad else 0.0
        mine = {"rank": trainer.global_rank, "value": value, "batch": self._batch_idx, "ids": self._batch_ids}
        if trainer.world_size == 1:
            return {**mine, "ranks": [0]} if bad else None
        flags = torch.zeros(trainer.world_size, device=trainer.strategy.root_device)  # every rank calls this
        flags[trainer.global_rank] = float(bad)
        ranks = [r for r, flag in enumerate(trainer.strategy.reduce(flags, reduce_op="sum").tolist()) if flag > 0]
        if not ranks:
            return None
        return {**trainer.strategy.broadcast(mine if trainer.global_rank == ranks[0] else None, src=ranks[0]),
                "ranks": ranks}  # fmt: skip

    # ------------------------------------------------------------------ the checks
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        found = self._agree(trainer, pl_module, loss)
        if found is None:
            return
        what = f"non-finite training loss ({found['value']})"
        if trainer.world_size > 1:
            others = [str(r) for r in found["ranks"][1:]]
            what += f" on rank {found['rank']} of {trainer.world_size}" + (
                f" (and on rank {', '.join(others)})" if others else "")  # fmt: skip
        where = self._where(trainer, found["ids"], found["batch"])
        if self.action == "stop":
            self._stop(trainer, what, where)
        self._skip(trainer, what, where, found["ids"], found["rank"])

    def _skip(self, trainer: Trainer, what: str, where: str, ids: list[str], rank: int | None) -> None:
        if self._skip_this_batch:
            return
        self._skip_this_batch = True
        record = {"step": trainer.global_step, "epoch": trainer.current_epoch, "dicom_id": list(ids)}
        if trainer.world_size > 1:
            record = {"step": record["step"], "epoch": record["epoch"], "rank": rank, "dicom_id": record["dicom_id"]}
        self.skipped.append(record)
        if trainer.global_rank == 0:  # the same skip on every rank, reported once
            log.warning("%s at %s: batch skipped (%d so far)", what, where, len(self.skipped))
        if len(self.skipped) > self.max_skips:
            self._stop(trainer, f"{what}; more than nonfinite.max_skips={self.max_skips} batches skipped, the last", where)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # gradients are averaged over DDP ranks before this hook: a NaN on one rank is a NaN on all, so every
        # rank takes the same decision here without a collective; under a GradScaler infinite gradients are its
        # business
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        bad_grads = scaler is None and not all(torch.isfinite(p.grad).all() for p in params)
        if bad_grads and not self._skip_this_batch:
            if self.action == "stop":
                self._stop(trainer, "non-finite gradients")
            self._skip(trainer, "non-finite gradients", self._where(trainer), self._batch_ids, None)  # all ranks' average
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

"""Training as a SLURM job, the callback: ranks from SLURM, a checkpoint on the time-limit signal, requeue, and resume.

One owner of the signal. SLURM warns a job ``signal_delay_s`` seconds before its time limit with ``USR2``
(``sbatch --signal=USR2@<delay>``, which hydra-submitit-launcher writes), sends ``SIGTERM`` on preemption
and cancellation, and ``SIGKILL`` a grace period later. Three parties could react:

* Lightning's ``SLURMEnvironment(auto_requeue=True)`` saves ``hpc_ckpt_N.ckpt`` and requeues *inside* the
  signal handler (a collective under DDP while the main thread may be in another collective), listens to
  ``USR1`` unless told otherwise, and silently does not install itself when a handler already exists, which
  submitit's always is. Its SIGTERM handler turns a preemption into an exception, i.e. a failed job;
* submitit's handler requeues the job but writes no checkpoint (hydra-submitit-launcher's ``checkpoint()``
  only resubmits the same arguments);
* :class:`RequeueOnSignal` (here) does both, at a point where every rank is in step.

While a model trains, :class:`RequeueOnSignal` owns ``USR2`` and ``SIGTERM``; Lightning's auto-requeue is
off (``SLURMEnvironment(auto_requeue=False)``, which still supplies the ranks) and submitit's handler, active
before and after training, is put back afterwards. A handler only sets a flag. After the next training batch
all ranks agree on the flag (one tiny all-reduce per step), write ``<run>/checkpoints/last.ckpt`` together,
rank zero calls ``scontrol requeue`` when the signal was the time-limit one (``SIGTERM`` is preemption or
cancellation: SLURM decides whether the job comes back), and every rank leaves with :class:`JobInterrupted`,
a ``SystemExit``: neither Hydra nor submitit records a result, so the submitting process keeps waiting for
the requeued job. That job runs the same pickled Hydra job in the same run folder, and
:func:`cxr_ldm.utils.slurm.default_ckpt_path` turns ``ckpt_path=null`` into ``last`` there.

SLURM signals every process of the job, helpers included: forked children (DataLoader workers,
multiprocessing pools) ignore the time-limit signal and get the default ``SIGTERM`` action back
(:func:`cxr_ldm.utils.slurm.reset_signals_in_forked_children`), and once a signal arrived the main process stops PyTorch's
``SIGCHLD`` check, so that workers killed by the ``SIGTERM`` which follows a requeue do not fail the job.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from cxr_ldm.utils.slurm import (
    in_slurm_job,
    requeue_job,
    reset_signals_in_forked_children,
    restart_count,
    signal_from_name,
    slurm_job_id,
)

log = logging.getLogger(__name__)

_NO_SIGNAL, _TERMINATE, _REQUEUE = 0, 1, 2


class JobInterrupted(SystemExit):
    """Leaves the process after the signal checkpoint; not an ``Exception``, so no job result is written."""


class RequeueOnSignal(Callback):
    """Checkpoint to ``<dirpath>/last.ckpt`` on SLURM's time-limit or termination signal, then requeue/stop.

    Args:
        dirpath: the run's checkpoint folder (``last.ckpt`` there is what ``ckpt_path=last`` resumes).
        requeue_signal: the time-limit warning (``USR2``: what submitit asks sbatch to send); it leads to a
            requeue. ``SIGTERM`` (preemption, cancellation) leads to a checkpoint and an exit.
        max_requeues: no requeue once SLURM has restarted the job this often (a checkpoint is still written).
        requeue: False writes the checkpoint and stops without requeueing.
    """

    def __init__(
        self,
        dirpath: str | Path,
        requeue_signal: str | int = "USR2",
        max_requeues: int = 20,
        requeue: bool = True,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.requeue_signal = signal_from_name(requeue_signal)
        self.max_requeues = max_requeues
        self.requeue = requeue
        self._received = _NO_SIGNAL
        self._main_pid = os.getpid()
        self._previous: dict[signal.Signals, Any] = {}
        self._exiting = False

    @property
    def ckpt_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    # ------------------------------------------------------------------ handlers
    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._main_pid:
            return  # a DataLoader worker forked from this process: the main process handles it
        if self._exiting:
            log.info("signal %s after the signal checkpoint: already leaving", signal.Signals(signum).name)
            return
        code = _REQUEUE if signum == self.requeue_signal else _TERMINATE
        self._received = max(self._received, code)
        # The job is ending: SLURM's SIGTERM (preemption, or the kill that follows a requeue) also reaches
        # the DataLoader workers, and PyTorch's SIGCHLD handler would turn their deaths into a RuntimeError,
        # i.e. a failed job in the middle of the checkpoint or the requeue.
        if signal.SIGCHLD not in self._previous:
            self._previous[signal.SIGCHLD] = signal.getsignal(signal.SIGCHLD)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        log.info("received %s: checkpoint after the current training batch", signal.Signals(signum).name)

    def _install(self, signum: signal.Signals) -> None:
        if signum not in self._previous:
            self._previous[signum] = signal.getsignal(signum)
        signal.signal(signum, self._handler)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # before DataLoader workers fork: they must neither requeue (submitit's handler, inherited) nor die
        # on the time-limit signal, which SLURM sends to every process of the job
        reset_signals_in_forked_children(self.requeue_signal)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after Lightning installed its SIGTERM handler (which would turn a preemption into a failure);
        # Lightning puts its own originals back when fitting ends, ours are restored in on_train_end
        self._main_pid = os.getpid()
        self._install(self.requeue_signal)
        self._install(signal.SIGTERM)
        self._announce(trainer)

    def _announce(self, trainer: Trainer) -> None:
        log.info(
            "SLURM job %s (restart %d) trains from step %d; on %s or SIGTERM, last.ckpt is written to %s",
            slurm_job_id(), restart_count(), trainer.global_step, self.requeue_signal.name, self.dirpath,
        )  # fmt: skip

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # After the signal checkpoint the process is leaving: the handlers stay, so that the SIGTERM which
        # follows a requeue neither reaches Lightning's handler nor (through PyTorch's SIGCHLD handler and the
        # dying DataLoader workers) turns the exit into a failed job. Lightning's own teardown then restores
        # what was there before fitting.
        if not self._exiting:
            self._restore()

    # ------------------------------------------------------------------- action
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        code = self._agreed_signal(trainer)
        if code == _NO_SIGNAL:
            return
        self._write_signal_checkpoint(trainer)
        log.info("signal checkpoint written at step %d: %s", trainer.global_step, self.ckpt_path)
        requeued = False
        if code == _REQUEUE and self.requeue and trainer.is_global_zero:
            if restart_count() >= self.max_requeues:
                log.warning("not requeueing: the job was already restarted %d times", restart_count())
            else:
                requeued = requeue_job()
        raise JobInterrupted(0 if requeued or code == _TERMINATE else 1)

    def _write_signal_checkpoint(self, trainer: Trainer) -> None:
        """``last.ckpt``, written by every rank together (rank zero writes); from here on the process leaves."""
        self._exiting = True
        if self.ckpt_path.is_symlink():  # ModelCheckpoint(save_last="link"): do not write through the link
            self.ckpt_path.unlink()
        self._adopt_as_last(trainer)
        trainer.save_checkpoint(self.ckpt_path)

    def _adopt_as_last(self, trainer: Trainer) -> None:
        """Tell ModelCheckpoint that last.ckpt is its own (the state goes into the checkpoint being written).

        Otherwise the resumed run's ModelCheckpoint, finding a last.ckpt it did not write, would save its
        next one as last-v1.ckpt and ``ckpt_path=last`` would keep resuming the older file.
        """
        from lightning.pytorch.callbacks import ModelCheckpoint

        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
                if Path(callback.dirpath).resolve() == self.dirpath.resolve():
                    callback.last_model_path = str(self.ckpt_path)

    def _agreed_signal(self, trainer: Trainer) -> int:
        """The strongest signal any rank received (all ranks call this after every training batch)."""
        if trainer.world_size == 1:
            return self._received
        flag = torch.tensor(self._received, device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(flag, reduce_op="max"))


def slurm_trainer_extras(cfg: Any, checkpoint_dir: str | Path) -> tuple[list[Callback], list[Any]]:
    """Callbacks and Trainer plugins for a SLURM task (none outside SLURM).

    ``cfg`` is the ``slurm`` block of ``train.yaml`` (``requeue_signal``, ``max_requeues``, ``requeue``).
    """
    if not in_slurm_job():
        return [], []
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    options = dict(cfg or {})
    callback = RequeueOnSignal(checkpoint_dir, **options)
    reset_signals_in_forked_children(callback.requeue_signal)
    return [callback], [SLURMEnvironment(auto_requeue=False)]

"""What each DDP rank must share and what it must not.

* Initial weights agree: every rank seeds with ``seed`` before building the model (DDP also broadcasts rank
  zero's parameters and buffers when it wraps the module).
* Random draws differ: Lightning reseeds every rank with the same ``PL_GLOBAL_SEED`` when it sets up the
  process group (``reset_seed`` in ``DDPStrategy.setup_distributed``), which would give every rank the same
  posterior samples, diffusion noise and timesteps for its different images. :class:`cxr_ldm.callbacks.rank_seeds.RankSeeds` reseeds
  rank ``r`` with ``seed + r`` right after that (in ``setup``). DataLoader workers derive their seeds from
  the process seed, their id and the rank (Lightning's ``pl_worker_init_function``), so report excerpts
  differ too.
* Data are sharded by Lightning's ``DistributedSampler`` (``use_distributed_sampler``). Its shuffling seed
  is ``PL_GLOBAL_SEED``, which must stay the same on all ranks, or the shards overlap: it stays ``seed``.

And what a rank does when another one is gone:

* A rank that waits in a collective gives up after ``ddp_timeout_s`` (``train.yaml``; the process group's
  timeout, :func:`ddp_strategy_with_timeout`): a hung rank (stuck in I/O, a node that went away without closing
  its connections) no longer holds the others for Lightning's default 30 minutes. A rank that died (SIGKILL, out
  of memory) closes its connections, and gloo fails the others' next collective at once.
* That failure ends the command with one line (:class:`DDPRankLostError`, :func:`lost_rank_error`) instead of
  the backend's traceback; rank 0 then also SIGKILLs the ranks it started itself that are still there (a hung
  rank would otherwise stay, holding its GPU).
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.strategies import DDPStrategy, Strategy
from lightning.pytorch.utilities import rank_zero_info

log = logging.getLogger(__name__)

# how long Lightning's child-process observer waits, after it sees a dead rank, before it SIGKILLs rank 0
OBSERVER_GRACE_S = 60.0


def fix_hydra_multirun_children(trainer: Trainer) -> bool:
    """Let Lightning's subprocess launcher start DDP children from a job of a local Hydra multirun.

    The launcher re-runs ``sys.argv`` plus ``hydra.run.dir=<HydraConfig.run.dir>``. In a multirun job that is
    the sweep command (``-m`` and every swept value) and a run folder that is not the job's, so each child
    would start a sweep of its own. Here the children get this job's overrides and its folder instead.
    Returns True when something was changed. Nothing to do under SLURM (it starts every rank itself).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
    from omegaconf import open_dict, read_write

    if not HydraConfig.initialized() or not isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        return False
    if trainer.strategy.cluster_environment.creates_processes_externally:
        return False
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return False
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    log.info("DDP children of this multirun job run in %s", hydra_cfg.runtime.output_dir)
    return True


def require_unused_parameter_detection(strategy: Strategy, who: str) -> None:
    """Let DDP tolerate parameters without gradients in a backward pass (``find_unused_parameters=True``).

    A module whose backward passes each leave some parameters without gradients (a GAN's two optimizers) would
    otherwise fail in DDP's reducer under plain ``strategy=ddp``. Call it from the module's ``setup``, i.e.
    before the strategy wraps the module in ``DistributedDataParallel``; ``who`` names the module in messages.
    """
    if not isinstance(strategy, DDPStrategy):
        return
    ddp_kwargs = getattr(strategy, "_ddp_kwargs", None)
    if not isinstance(ddp_kwargs, dict):
        raise RuntimeError(f"{who} needs DDP's unused-parameter detection: use strategy=ddp_find_unused_parameters_true")
    if not ddp_kwargs.get("find_unused_parameters", False):
        rank_zero_info(f"{who}: enabling DDP find_unused_parameters (two backward passes per step).")
        ddp_kwargs["find_unused_parameters"] = True


# the DDP strategies given by name whose process-group timeout ddp_timeout_s sets (the others keep theirs)
_DDP_NAMES = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


def ddp_strategy_with_timeout(strategy: Any, timeout_s: float | None) -> Any:
    """``trainer.strategy`` with the process-group timeout ``timeout_s`` (seconds; None: Lightning's default).

    A name of a DDP strategy (``ddp``, ``ddp_find_unused_parameters_true``) becomes that strategy built with
    ``timeout=timedelta(seconds=timeout_s)`` (Hydra cannot write a timedelta); a DDPStrategy object gets it too;
    anything else is returned as it is.
    """
    if timeout_s is None:
        return strategy
    if float(timeout_s) <= 0:
        raise ValueError(f"ddp_timeout_s={timeout_s}: must be a positive number of seconds (or null: Lightning's default)")
    timeout = datetime.timedelta(seconds=float(timeout_s))
    if isinstance(strategy, str) and strategy in _DDP_NAMES:
        from lightning.pytorch.strategies import StrategyRegistry

        entry = StrategyRegistry[strategy]
        return entry["strategy"](**{**entry["init_params"], "timeout": timeout})
    if isinstance(strategy, DDPStrategy):
        strategy._timeout = timeout
    return strategy


class DDPRankLostError(RuntimeError):
    """A collective failed under DDP: another rank died or did not answer within the timeout."""


# what gloo and NCCL say when a peer is gone (a plain RuntimeError from gloo) or does not answer in time
_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out waiting",
         "timed out", "Timeout", "NCCL communicator was aborted", "ProcessGroupNCCL")  # fmt: skip


def lost_rank_error(err: BaseException, trainer: Trainer, timeout_s: float | None) -> DDPRankLostError | None:
    """The one-line error for ``err`` if it is a collective that lost another rank, else None."""
    dist_error = getattr(torch.distributed, "DistError", ())
    if trainer.world_size < 2 or not (isinstance(err, dist_error) or any(s in str(err) for s in _LOST)):
        return None
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    first = first.split("] ", 1)[-1].split(". ")[0]  # without gloo's source location and its advice
    timeout = "Lightning's default of 1800" if timeout_s is None else f"ddp_timeout_s={timeout_s:g}"
    how = (f"another rank did not answer within {timeout} s (hung: stuck in I/O, a lost node)"
           if "imed out" in first or "Timeout" in first
           else "another rank went away: it died (killed, out of memory, see its own output above)")  # fmt: skip
    return DDPRankLostError(
        f"rank {trainer.global_rank} of {trainer.world_size} lost the other ranks at step {trainer.global_step} "
        f"(epoch {trainer.current_epoch}): {how} ({first}); resume with ckpt_path=last from the newest checkpoint "
        f"of the run"
    )


def kill_started_ranks_at_exit(trainer: Trainer) -> None:
    """At this process's exit, SIGKILL the ranks it started itself (Lightning's launcher) that are still there.

    They are also taken out of the list that Lightning's child-process observer watches (the launcher's own
    ``procs``): the observer SIGKILLs this process (rank 0) within 5 s of seeing a dead child, which would cut off
    the one-line error and ``run_info.json``. Idempotent.
    """
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    procs = list(getattr(launcher, "procs", [])) if isinstance(launcher, _SubprocessScriptLauncher) else []
    if not procs:
        return
    launcher.procs.clear()  # the observer's list too: empty, it stops watching

    def kill() -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)

    atexit.register(kill)


def patient_child_observer(grace_s: float = OBSERVER_GRACE_S) -> bool:
    """Let Lightning's child-process observer (a thread of rank 0 that polls the ranks it started every 5 s)
    wait ``grace_s`` after it sees a dead rank before it SIGKILLs everything, rank 0 included. Rank 0 usually sees
    the loss itself at its next collective and reports it in one line; without the wait the observer could poll
    first and cut rank 0 off silently (seen on CI: exit -9, no message). True if an observer was found."""
    for thread in threading.enumerate():
        terminate = getattr(thread, "_terminate_all", None)
        if thread.name == "child-process-observer" and callable(terminate):

            def terminate_later(terminate: Any = terminate) -> None:
                time.sleep(grace_s)
                terminate()

            thread._terminate_all = terminate_later  # type: ignore[attr-defined]
            return True
    return False


class ReportLostRank(Callback):
    """Rank 0 under DDP, on a collective that lost another rank: :func:`kill_started_ranks_at_exit` at once
    (``on_exception`` comes before Lightning's teardown), so that the observer leaves rank 0 the time to say so;
    and from the start of fitting the observer waits before it kills (:func:`patient_child_observer`)."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if trainer.global_rank == 0 and trainer.world_size > 1:
            patient_child_observer()

    def on_exception(self, trainer: Trainer, pl_module: Any, exception: BaseException) -> None:
        if trainer.global_rank == 0 and lost_rank_error(exception, trainer, None) is not None:
            kill_started_ranks_at_exit(trainer)


def outlive_launcher(launcher_pid: int, timeout_s: float = 60.0) -> None:
    """Wait (at most ``timeout_s``) until ``launcher_pid`` has exited, if it is this process's parent.

    Lightning's launcher SIGKILLs rank 0 (its own process) as soon as a rank it started exits with a non-zero
    status; a rank that stops with rank 0 leaves after it, so that rank 0 reports the error and records it.
    A rank started by SLURM or torchrun (another parent) returns at once.
    """
    deadline = time.monotonic() + timeout_s
    while os.getppid() == launcher_pid and launcher_pid != os.getpid() and time.monotonic() < deadline:
        time.sleep(0.1)

"""SLURM's environment for a training job: is this a SLURM task, how often was it requeued, requeue it.

The callback that owns SLURM's time-limit and termination signals while a model trains is
:class:`cxr_ldm.callbacks.slurm_requeue.RequeueOnSignal` (its docstring tells the whole story); this module holds
what it and the training run need without Lightning: the job id, ``scontrol requeue``, ``ckpt_path=last`` in a
requeued job, and forked children that must not inherit the job's signal handlers.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from typing import Any

log = logging.getLogger(__name__)


def in_slurm_job() -> bool:
    """True inside tasks that SLURM started (``srun``/``sbatch``), as Lightning decides it.

    Interactive allocations (job name ``bash`` or ``interactive``) count as local runs, like in Lightning.
    """
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def restart_count() -> int:
    """How often SLURM has requeued this job (``SLURM_RESTART_COUNT``; 0 for the first start)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def default_ckpt_path(ckpt_path: str | None) -> str | None:
    """``ckpt_path`` as given, except ``None`` in a requeued SLURM job, which becomes ``"last"``.

    A requeued job re-runs with the arguments of its first start, in the same run folder; its own
    ``checkpoints/last.ckpt`` is where it stopped. An explicit ``ckpt_path`` always wins.
    """
    if ckpt_path in (None, "") and in_slurm_job() and restart_count() > 0:
        log.info(
            "SLURM job restart %d: resuming this run's last checkpoint (ckpt_path=last)", restart_count()
        )
        return "last"
    return ckpt_path


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` needs: ``<array job>_<task>`` for array tasks, else the job id."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_job(job_id: str | None = None) -> bool:
    """``scontrol requeue`` this job; False (and a logged reason) when that is impossible."""
    job_id = job_id or slurm_job_id()
    if not job_id or not re.fullmatch(r"[0-9]+(_[0-9]+)?", job_id):
        log.error("cannot requeue: no valid SLURM job id (got %r)", job_id)
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.error("scontrol requeue %s failed: %s", job_id, error)
        return False
    if result.returncode != 0:
        log.error("scontrol requeue %s failed (%d): %s", job_id, result.returncode, result.stderr.strip())
        return False
    log.info("requeued SLURM job %s", job_id)
    return True


def signal_from_name(name: str | int | signal.Signals) -> signal.Signals:
    """``"USR2"``, ``"SIGUSR2"`` or a number -> ``signal.SIGUSR2``."""
    if isinstance(name, signal.Signals):
        return name
    if isinstance(name, int):
        return signal.Signals(name)
    key = name.upper()
    return signal.Signals[key if key.startswith("SIG") else f"SIG{key}"]


_FORK_HOOK: dict[str, Any] = {}


def reset_signals_in_forked_children(requeue_signal: signal.Signals = signal.SIGUSR2) -> None:
    """Forked children (multiprocessing pools, DataLoader workers) must not inherit the job's handlers.

    submitit makes its tasks ignore ``SIGTERM`` (a logging handler). A ``multiprocessing.Pool`` forked from
    such a task, e.g. the first-use phantom data generation, inherits that handler, so ``Pool.terminate()``
    (the end of every ``with Pool()``) waits forever for workers that shrug off its ``SIGTERM``. In children
    ``SIGTERM`` gets its default action back and the time-limit signal is ignored (the main process
    handles it). Registered once per process.
    """
    _FORK_HOOK["signal"] = requeue_signal
    if _FORK_HOOK.get("registered"):
        return

    def _child() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCONT, signal.SIG_DFL)  # submitit logs it
        signal.signal(_FORK_HOOK["signal"], signal.SIG_IGN)

    os.register_at_fork(after_in_child=_child)
    _FORK_HOOK["registered"] = True

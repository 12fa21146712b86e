"""The SLURM signal logic in one process, without a cluster: a real Trainer receives real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from cxr_ldm.callbacks.slurm_requeue import JobInterrupted, RequeueOnSignal
from cxr_ldm.utils.slurm import default_ckpt_path, slurm_job_id


class SendSignal(Callback):
    """Sends ``signum`` to this process at the end of training batch ``at`` (as SLURM would, at any time)."""

    def __init__(self, signum: int, at: int) -> None:
        self.signum, self.at = signum, at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            os.kill(os.getpid(), self.signum)


def _fit(tmp_path, signum: int):
    ckpt_dir = tmp_path / "checkpoints"
    previous = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM)}
    trainer = Trainer(
        max_steps=20, logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[SendSignal(signum, at=2), ModelCheckpoint(dirpath=ckpt_dir, save_last=True),
                   RequeueOnSignal(ckpt_dir, requeue=False)],
    )  # fmt: skip
    with pytest.raises(JobInterrupted) as exit_info:
        trainer.fit(BoringModel())
    # the callback leaves its handlers in place on the way out (a late SIGTERM must not reach Lightning's);
    # Lightning's teardown then restores what was there before fitting
    assert {s: signal.getsignal(s) for s in previous} == previous
    return ckpt_dir / "last.ckpt", exit_info.value


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM])
def test_signal_writes_last_ckpt_after_the_current_batch_and_leaves(tmp_path, signum):
    last, exit_ = _fit(tmp_path, signum)
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2  # the batch during which the signal came is finished, then training stops
    # ModelCheckpoint adopts the file, so the resumed run keeps writing last.ckpt (not last-v1.ckpt)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert state["last_model_path"] == str(last)
    assert isinstance(exit_, SystemExit) and not isinstance(exit_, Exception)  # no job result is recorded
    assert exit_.code == (1 if signum == signal.SIGUSR2 else 0)  # USR2 wanted a requeue (off here)


def test_requeued_job_resumes_last_unless_a_path_is_given(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert default_ckpt_path(None) is None  # not a SLURM task
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert default_ckpt_path(None) == "last"
    assert default_ckpt_path("/some/file.ckpt") == "/some/file.ckpt"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert default_ckpt_path(None) is None  # first start
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    monkeypatch.setenv(
        "SLURM_JOB_NAME", "interactive"
    )  # salloc shell: Lightning treats it as local, so do we
    assert default_ckpt_path(None) is None


def test_job_id_of_array_tasks(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "107")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    assert slurm_job_id() == "107"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "100")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert slurm_job_id() == "100_7"  # what scontrol requeue needs for one task of an array


def test_forked_children_do_not_inherit_an_ignoring_sigterm_handler():
    """submitit ignores SIGTERM in its tasks; ``Pool.terminate()`` (the end of every ``with Pool()``) and
    ``Process.terminate()`` end forked children with SIGTERM. A forked child reports its handlers, then waits;
    its parent's SIGTERM must end it at once (exit -15). A plain forked Process, not a Pool: a Pool's own
    terminate can wait on its queue lock, which once held this test past its timeout on a loaded CI machine."""
    code = textwrap.dedent(
        """
        import multiprocessing, signal, time
        from cxr_ldm.utils.slurm import reset_signals_in_forked_children
        signal.signal(signal.SIGTERM, lambda *a: None)  # as submitit's "bypass" handler
        reset_signals_in_forked_children()

        def child(conn):
            term, usr2 = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR2)
            conn.send((term == signal.SIG_DFL, usr2 == signal.SIG_IGN))
            time.sleep(120)

        ctx = multiprocessing.get_context("fork")
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=child, args=(writer,))
        proc.start()
        print(reader.recv())
        proc.terminate()
        proc.join(30)
        print(proc.exitcode)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(True,", "True)", str(-signal.SIGTERM)]

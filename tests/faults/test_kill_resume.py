"""Faults survived, nothing lost: a real ``python -m cxr_ldm.train`` killed at several moments, then resumed.

One uninterrupted run is the reference (3 epochs of 3 steps, a checkpoint after every epoch). The same run is
then driven through, in turn (``fault_points.py`` holds it at each moment and the test kills it):

1. SIGKILL between two steps (step 4, after the epoch-0 checkpoint);
2. SIGKILL halfway through writing ``last.ckpt`` at the end of epoch 1 (its ``epoch_001.ckpt`` is complete,
   so ``ckpt_path=last`` resumes from there);
3. SIGKILL during the validation of epoch 2;
4. Ctrl-C (SIGINT) between two steps of epoch 2: ``last.ckpt`` is written after the batch, exit status 130;
5. the disk fills up at the end of epoch 2 (the run folder sits on a small tmpfs; without one, a file-size
   limit): one line, exit 1, every file written before intact;
6. ``ckpt_path=last`` to the end, once there is space again.

After every kill the newest complete ``last.ckpt`` loads and holds the expected step; every resume is
``ckpt_path=last``; the finished run has the reference's epochs and steps, every checkpoint equal to the
reference's bit for bit (weights, optimizer and schedulers: exact resume at epoch boundaries and from the
Ctrl-C's mid-epoch ``last.ckpt``), and metrics.csv has each validation once, with the reference's values.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import run_harness as harness
from helpers import small_tmpfs

from cxr_ldm.utils.checkpoints import resolve_ckpt_path

pytestmark = pytest.mark.slow

RUN = [
    "experiment=aekl_phantom", "debug=tiny", "trainer.max_epochs=3", "callbacks.model_checkpoint.save_top_k=-1",
    "callbacks.model_checkpoint.monitor=null", "callbacks.reconstruction_grid.every_n_epochs=100",
]  # fmt: skip


def _args(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return harness.train_args(RUN, data_dir, run_dir, *extra)


_fault, _run, _interrupt, _ckpt, _same_weights = (harness.fault, harness.run, harness.interrupt, harness.load,
                                                  harness.same_weights)  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_data_dir):
    """The uninterrupted run, started in the background (it shares nothing with the killed runs but the phantom
    data, built once under a file lock): ``reference()`` waits for it and returns its run folder."""
    tmp = tmp_path_factory.mktemp("reference")
    log_path = tmp / "reference.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(_args(shared_data_dir, tmp / "run"), cwd=tmp, env=harness.env(), stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip

    def finished() -> Path:
        assert proc.wait(timeout=600) == 0, log_path.read_text()[-3000:]
        return tmp / "run"

    yield finished
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture()
def small_disk(tmp_path):
    """The run folder's own small file system (24 MB: the run needs about 15), so that it can fill up."""
    disk = tmp_path / "disk"
    with small_tmpfs(disk, "24m") as mounted:
        yield disk, mounted


def test_killed_at_any_moment_the_run_resumes_to_the_same_end(tmp_path, shared_data_dir, reference, small_disk):
    disk, mounted = small_disk
    run, ckpts = disk / "run", disk / "run" / "checkpoints"
    last = ckpts / "last.ckpt"

    # 1. SIGKILL between two steps
    code, _ = _interrupt(_args(shared_data_dir, run, *_fault(tmp_path / "m1", "batch_start", step=4)), tmp_path,
                         tmp_path / "m1", signal.SIGKILL)  # fmt: skip
    assert code == -signal.SIGKILL
    assert _ckpt(last)["global_step"] == 3

    # 2. SIGKILL halfway through writing last.ckpt (epoch 1's): the complete epoch-0 file is still there
    code, _ = _interrupt(
        _args(shared_data_dir, run, "ckpt_path=last", *_fault(tmp_path / "m2", "checkpoint_write", step=6, name="last.ckpt")),
        tmp_path, tmp_path / "m2", signal.SIGKILL,
    )  # fmt: skip
    assert code == -signal.SIGKILL
    assert list(ckpts.glob(".last.ckpt.*.tmp")), "the kill should have hit the write"
    assert _ckpt(last)["global_step"] == 3  # the previous last.ckpt, complete
    assert _ckpt(ckpts / "epoch_001.ckpt")["global_step"] == 6  # written just before: ckpt_path=last takes it

    # 3. SIGKILL during validation (epoch 2)
    code, _ = _interrupt(_args(shared_data_dir, run, "ckpt_path=last", *_fault(tmp_path / "m3", "validation", epoch=2)),
                         tmp_path, tmp_path / "m3", signal.SIGKILL)  # fmt: skip
    assert code == -signal.SIGKILL
    assert not list(ckpts.glob(".last.ckpt.*.tmp"))  # the resume cleared the dead write's temporary file
    assert _ckpt(Path(resolve_ckpt_path("last", run)))["global_step"] == 6

    # 4. Ctrl-C between two steps of epoch 2: last.ckpt after that batch, exit status 130, how to resume
    code, output = _interrupt(
        _args(shared_data_dir, run, "ckpt_path=last", *_fault(tmp_path / "m4", "batch_start", step=7, seconds=3)),
        tmp_path, tmp_path / "m4", signal.SIGINT,
    )  # fmt: skip
    assert code == 130, output[-3000:]
    assert f"wrote {last} at step 8" in output and f"ckpt_path=last hydra.run.dir={run}" in output
    assert _ckpt(last)["global_step"] == 8
    epochs_before_the_disk_fills = {p.name: p.read_bytes() for p in ckpts.glob("epoch_*.ckpt")}

    # 5. the disk fills up at the end of epoch 2 (a tmpfs filled by a file there; else a file-size limit):
    # one line, exit 1, the files written before intact
    filler = disk / "filler"
    fault = _fault(tmp_path / "m5", "fill_disk", epoch=2, fill_path=filler if mounted else "''")
    failed = _run(_args(shared_data_dir, run, "ckpt_path=last", *fault), cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr[-3000:]
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("error: no space left on the device writing the ") and "Traceback" not in failed.stderr
    assert message.endswith("free space (or raise the quota) and run the same command again")
    assert _ckpt(last)["global_step"] == 8 and not list(ckpts.glob(".*.tmp"))
    assert {p.name: p.read_bytes() for p in ckpts.glob("epoch_*.ckpt")} == epochs_before_the_disk_fills
    pd.read_csv(run / "csv" / "metrics.csv")
    if mounted:
        filler.unlink()  # space again

    # 6. to the end
    done = _run(_args(shared_data_dir, run, "ckpt_path=last"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    reference = reference()
    ref = reference / "checkpoints"
    final, expected = _ckpt(last), _ckpt(ref / "last.ckpt")
    assert (final["global_step"], final["epoch"]) == (expected["global_step"], expected["epoch"]) == (9, 2)
    assert sorted(p.name for p in ckpts.glob("epoch_*.ckpt")) == sorted(p.name for p in ref.glob("epoch_*.ckpt"))
    # resumed from epoch-end checkpoints (steps 1-3) and from the mid-epoch one of the Ctrl-C (step 4): exact
    for name in ("epoch_000.ckpt", "epoch_001.ckpt", "epoch_002.ckpt", "last.ckpt"):
        assert _same_weights(ckpts / name, ref / name), name
    for key in ("optimizer_states", "lr_schedulers"):
        assert harness.differences(final[key], expected[key], key) == [], key
    val = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["val/ms_ssim"])
    assert val["epoch"].tolist() == [0, 1, 2]
    ref_val = pd.read_csv(reference / "csv" / "metrics.csv").dropna(subset=["val/ms_ssim"])
    assert val["val/ms_ssim"].tolist() == ref_val["val/ms_ssim"].tolist()

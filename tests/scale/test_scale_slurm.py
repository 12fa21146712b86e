"""Training through hydra-submitit-launcher on a real single-node SLURM cluster (conftest.py starts it).

The commands are the ones docs/cluster.md gives users, with the CPU launcher (``hydra/launcher=slurm_cpu``)
and tiny overrides.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import checkpoint_differences, run_module

pytestmark = pytest.mark.slow

SMALL = ["debug=tiny", "data.batch_size=4"]


def _results(sweep: Path) -> dict[tuple[int, int], object]:
    """submitit's result pickles: (hydra job number, task) -> Hydra's JobReturn."""
    out = {}
    for path in sweep.glob(".submitit/*/*_result.pkl"):
        outcome, ret = pickle.loads(path.read_bytes())
        assert outcome == "success", f"{path}: {ret}"
        task = int(path.name.split("_")[-2])
        out[(int(ret.hydra_cfg.hydra.job.num), task)] = ret
    return out


def _logged_metric(run: Path, ranks: int = 1) -> float:
    """The value train.log reports (every rank of a SLURM job logs to the job's train.log)."""
    found = re.findall(r"optimized_metric val/ms_ssim = ([0-9.eE+-]+)", (run / "train.log").read_text())
    assert len(found) == ranks and len(set(found)) == 1, (run / "train.log").read_text()[-3000:]
    return float(found[0])


def _sacct_states(job_id: str, env: dict, timeout: float = 60) -> list[str]:
    """Final accounting states of a job's allocations (a job still exits after writing its result)."""
    deadline = time.time() + timeout
    while True:
        command = ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job_id]
        out = subprocess.run(
            command, env={**os.environ, **env}, capture_output=True, text=True, check=True
        ).stdout
        states = [line.split("|")[1] for line in out.split()]
        if states and not {"PENDING", "RUNNING", "COMPLETING"} & set(states) or time.time() > deadline:
            return states
        time.sleep(0.5)


def test_sweep_of_two_jobs_writes_checkpoints_and_returns_metrics(slurm_cluster, shared_data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_module(
        "cxr_ldm.train", "-m", "hydra/launcher=slurm_cpu", "experiment=aekl_phantom", "logger=wandb",
        f"paths.data_dir={shared_data_dir}", f"hydra.sweep.dir={sweep}", "model.optimizer_g.lr=1e-4,3e-4",
        *SMALL, cwd=tmp_path, env={**slurm_cluster["env"], "WANDB_MODE": "offline"}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = _results(sweep)
    assert sorted(results) == [(0, 0), (1, 0)]
    array_ids = {
        p.name.split("_")[0] for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)
    }
    assert len(array_ids) == 1 and _sacct_states(array_ids.pop(), slurm_cluster["env"]) == ["COMPLETED"] * 2
    wandb_ids = set()
    for (num, _), ret in results.items():
        run = sweep / str(num)
        assert Path(ret.hydra_cfg.hydra.runtime.output_dir) == run
        assert f"model.optimizer_g.lr={['0.0001', '0.0003'][num]}" in ret.overrides
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert ckpt["global_step"] == 3
        best = next(
            v["best_model_score"] for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")
        )
        assert isinstance(ret.return_value, float)
        assert ret.return_value == pytest.approx(float(best)) == pytest.approx(_logged_metric(run))
        # its own wandb run, finished by the job itself (wandb's own log of the run)
        (offline_run,) = (run / "wandb").glob("offline-run-*")
        run_id = offline_run.name.rsplit("-", 1)[-1]
        wandb_ids.add(run_id)
        assert f"finishing run cxr-ldm/{run_id}" in (offline_run / "logs" / "debug.log").read_text()
    assert len(wandb_ids) == 2


def test_ddp_job_with_two_tasks_per_node(slurm_cluster, shared_data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_module(
        "cxr_ldm.train", "-m", "hydra/launcher=slurm_cpu", "experiment=aekl_phantom", "trainer=ddp_cpu",
        f"paths.data_dir={shared_data_dir}", f"hydra.sweep.dir={sweep}", *SMALL,
        cwd=tmp_path, env=slurm_cluster["env"], timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (script,) = sweep.glob(".submitit/*/*_submission.sh")
    assert "#SBATCH --ntasks-per-node=2" in script.read_text()
    results = _results(sweep)
    assert sorted(results) == [(0, 0), (0, 1)]  # one job, two tasks = two ranks
    assert (
        results[(0, 0)].return_value
        == results[(0, 1)].return_value
        == pytest.approx(_logged_metric(sweep / "0", ranks=2))
    )
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))
    assert "rank 0 of 2: random draws seeded with 12345" in logs
    assert "rank 1 of 2: random draws seeded with 12346" in logs
    ckpt = torch.load(sweep / "0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3  # 3 steps of 2 x 4 images, counted once
    assert len(list((sweep / "0").rglob("metrics.csv"))) == 1


def _squeue(job_id: str, env: dict) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], env=env, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    out, err = proc.communicate(timeout=30) if proc.poll() is not None else ("", "")
    raise AssertionError(f"timed out waiting for {what}\n{out[-2000:]}\n{err[-3000:]}")


def test_time_limit_signal_checkpoints_requeues_and_resumes(slurm_cluster, shared_data_dir, tmp_path):
    """USR2 (sbatch --signal, before the time limit) -> last.ckpt, requeue, resume from it, finish, with the
    weights and optimizer state of the same job run without the signal, bit for bit (the signal checkpoint is
    mid-epoch: the requeued job continues the epoch where it stopped).

    A DDP job (two tasks) with a DataLoader worker per rank: both ranks get the signal from SLURM and write
    the checkpoint together, and the SIGTERM that follows the requeue kills the workers without failing the job.
    """
    sweep, max_steps = tmp_path / "sweep", 200  # 40 epochs of 5 steps: the last one validates and saves
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **slurm_cluster["env"]}
    cmd = [
        sys.executable, "-m", "cxr_ldm.train", "-m", "hydra/launcher=slurm_cpu", "experiment=aekl_phantom",
        f"paths.data_dir={shared_data_dir}", f"hydra.sweep.dir={sweep}", "trainer.max_epochs=1000",
        *SMALL, f"trainer.max_steps={max_steps}", "trainer.limit_train_batches=5",
        "trainer.check_val_every_n_epoch=20",
        "data.num_workers=1", "trainer=ddp_cpu", "cpu_threads=1",  # one thread: the same sums in both jobs
    ]  # fmt: skip
    driver = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    log = sweep / "0" / "train.log"

    def log_has(text: str):
        return lambda: log.is_file() and text in log.read_text()

    try:
        _wait_for(log_has("(restart 0) trains from step 0"), 180, "training to start", driver)
        (script,) = (sweep / ".submitit").glob("*/*_submission.sh")
        job_id = script.name.removesuffix("_submission.sh")  # one job, not an array
        subprocess.run(["scancel", "--signal=USR2", job_id], env=env, check=True)
        _wait_for(log_has(f"requeued SLURM job {job_id}"), 120, "the requeue", driver)
        # SLURM holds a requeued job for about two minutes (pending, reason BeginTime); an operator may
        # release it at once, which is all this does
        _wait_for(lambda: _squeue(job_id, env) == "PENDING BeginTime", 60, "the requeued job to pend", driver)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env, check=True)
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, out[-2000:] + err[-3000:]

    text = log.read_text()
    (step,) = set(map(int, re.findall(r"signal checkpoint written at step (\d+)", text)))  # on both ranks
    assert 0 < step < max_steps
    assert f"resuming from {sweep / '0' / 'checkpoints' / 'last.ckpt'}" in text
    assert f"(restart 1) trains from step {step};" in text
    ckpt = torch.load(sweep / "0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == max_steps
    assert not list((sweep / "0" / "checkpoints").glob("last-v*.ckpt"))  # ModelCheckpoint kept last.ckpt
    results = _results(sweep)
    assert sorted(results) == [(0, 0), (0, 1)]
    assert results[(0, 0)].return_value == pytest.approx(_logged_metric(sweep / "0", ranks=2))
    assert _sacct_states(job_id, slurm_cluster["env"]) == ["COMPLETED"]
    show = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout
    assert re.search(r"\bRestarts=1\b", show), show

    # the same job, never signalled: the requeued one ends where it ends
    reference = tmp_path / "reference"
    cmd[cmd.index(f"hydra.sweep.dir={sweep}")] = f"hydra.sweep.dir={reference}"
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = torch.load(reference / "0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert expected["global_step"] == ckpt["global_step"] == max_steps
    for key in ("state_dict", "optimizer_states"):
        assert checkpoint_differences(ckpt[key], expected[key], key) == [], key


# hydra/launcher=slurm with trainer=cpu used to ask for --gpus-per-node=1: "Invalid generic resource (gres)
# specification" on this cluster, which has no GPUs (the GPU request now follows the trainer, test_scale_gres.py)
def test_cpu_trainer_job_runs_on_a_cluster_without_gpus(slurm_cluster, shared_data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_module(
        "cxr_ldm.train", "-m", "hydra/launcher=slurm", "trainer=cpu", "experiment=aekl_phantom",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=null", "hydra.launcher.timeout_min=10",
        "hydra.launcher.signal_delay_s=30", f"paths.data_dir={shared_data_dir}", f"hydra.sweep.dir={sweep}", *SMALL,
        cwd=tmp_path, env=slurm_cluster["env"], timeout=600,
    )  # fmt: skip
    output = proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "gres" not in output.lower(), output
    assert proc.returncode == 0, output
    (submission,) = sweep.glob(".submitit/*/*_submission.sh")
    assert "--gpus-per-node" not in submission.read_text() and "--gres" not in submission.read_text()
    (result,) = sweep.glob(".submitit/*/*_result.pkl")
    outcome, ret = pickle.loads(result.read_bytes())
    assert outcome == "success" and isinstance(ret.return_value, float)
    assert (Path(ret.hydra_cfg.hydra.runtime.output_dir) / "checkpoints" / "last.ckpt").is_file()

"""The latent cache and sample folders under faults: the real ``python -m cxr_ldm.cache_latents`` and
``python -m cxr_ldm.sample`` SIGKILLed halfway through writing a file, then run again with the same command.

``slow_write/sitecustomize.py`` (on the killed process's import path) holds the process halfway through writing
one named file (half of its bytes on disk, fsynced) and tells the test, which SIGKILLs it there. After each kill:
nothing half-written is visible under a final name (every shard loads with its shape, every PNG opens with its
size), the files finished before are there; the re-run recomputes only what is missing (the finished files keep
their inode and mtime, the command's log counts the rest), ends equal to an uninterrupted run (shards byte for
byte, PNGs pixel for pixel: image ``k`` has its own seed) and removes the dead run's temporary file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest_plugins = ["ldm_fixtures"]
pytestmark = pytest.mark.slow

HOOK = Path(__file__).parent / "slow_write"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOOK), os.environ.get("PYTHONPATH")) if p)
    return env


def _run(module: str, args: list[str], cwd: Path) -> str:
    """The command to its end (exit 0); returns its output."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _kill_in_write(module: str, args: list[str], cwd: Path, part: str) -> str:
    """Start the command, wait until it is halfway through writing the file named ``*part*``, SIGKILL it;
    returns the path of the file it was writing."""
    marker, log_path = cwd / f"held-{part}", cwd / f"killed-{part}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                env=_env(CXR_LDM_SLOW_WRITE=part, CXR_LDM_SLOW_WRITE_MARKER=str(marker)))  # fmt: skip
    deadline = time.time() + 600
    try:
        while not marker.is_file():
            assert proc.poll() is None, f"ended ({proc.returncode}) before writing {part}:\n{log_path.read_text()[-3000:]}"
            assert time.time() < deadline, f"{part} was not written in time"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return marker.read_text().split(" ", 1)[1]


def _ids(paths) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


# ------------------------------------------------------------------------------------------------ cache_latents
def _cache_args(data_dir: Path, ae_ckpt: Path, cache_dir: Path, run_dir: Path) -> list[str]:
    return ["experiment=ldm_phantom", "debug=tiny", f"paths.data_dir={data_dir}", f"model.autoencoder_ckpt={ae_ckpt}",
            "data.latent_cache_shard_size=4", f"data.latent_cache_dir={cache_dir}", "+cache_device=cpu",
            "+cache_splits=[train]", f"hydra.run.dir={run_dir}"]  # fmt: skip


def test_cache_latents_killed_in_a_shard_write_resumes_with_the_finished_shards(
    tmp_path: Path, shared_data_dir: Path, tiny_ae_ckpt: Path
):
    reference = tmp_path / "reference"
    _run("cxr_ldm.cache_latents", _cache_args(shared_data_dir, tiny_ae_ckpt, reference, tmp_path / "run0"), tmp_path)
    [ref] = reference.glob("train-*")
    ref_shards = sorted(ref.glob("shard_*.npy"))
    n_shards = len(ref_shards)
    shape = np.load(ref_shards[0]).shape
    assert n_shards >= 5 and shape[:2] == (4, 2)

    args = _cache_args(shared_data_dir, tiny_ae_ckpt, tmp_path / "cache", tmp_path / "run")
    writing = Path(_kill_in_write("cxr_ldm.cache_latents", args, tmp_path, "shard_00002.npy"))
    [folder] = (tmp_path / "cache").glob("train-*")
    assert folder.name == ref.name  # the same key: the re-run continues this folder
    finished = sorted(folder.glob("shard_*.npy"))
    assert [p.name for p in finished] == ["shard_00000.npy", "shard_00001.npy"]  # shard 2's half is not among them
    assert all(np.load(p).shape == shape for p in finished)
    assert writing.name.startswith(".shard_00002.npy.") and writing.parent == folder
    assert [p.name for p in folder.glob(".*.tmp")] == [writing.name] and writing.stat().st_size > 0
    assert not (folder / "meta.json").exists()  # written once every shard is there
    before = _ids(finished)

    log = _run("cxr_ldm.cache_latents", args, tmp_path)
    assert f"encoding {n_shards - 2} of {n_shards} shards" in log
    assert f"encoded {n_shards - 2} shard(s)" in log
    assert _ids(finished) == before  # the finished shards are kept, not written again
    assert sorted(p.name for p in folder.glob("shard_*.npy")) == [p.name for p in ref_shards]
    for shard in ref_shards:  # byte for byte the uninterrupted run's
        assert (folder / shard.name).read_bytes() == shard.read_bytes(), shard.name
    assert json.loads((folder / "meta.json").read_text()) == json.loads((ref / "meta.json").read_text())
    assert not list(folder.glob(".*.tmp"))  # the dead run's temporary file is removed

    shards = _ids(folder.glob("shard_*.npy"))
    assert "encoded" not in _run("cxr_ldm.cache_latents", args, tmp_path)  # complete: nothing is encoded again
    assert _ids(folder.glob("shard_*.npy")) == shards


# ------------------------------------------------------------------------------------------------------- sample
NAMES = ["00_000.png", "00_001.png", "00_002.png", "01_000.png", "01_001.png", "01_002.png"]
GRIDS = ["grid_00.png", "grid_01.png", "prompt_grid.png"]


def _sample_args(ckpt: Path, out: Path) -> list[str]:
    # 6 images in batches of 2: the re-run after a kill at image 3 has batches [3, 4], [5], not [2, 3], [4, 5]
    return [f"model={ckpt}", 'prompts=["Large right pleural effusion.","Moderate cardiomegaly."]', "n_per_prompt=3",
            "sampling.steps=2", "sampling.sampler=ddim", "sampling.batch_size=2", "sampling.seed=5", "device=cpu",
            "progress=false", f"out_dir={out}"]  # fmt: skip


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        png.load()
        return np.asarray(png)


def _every_png_opens(out: Path) -> list[str]:
    names = sorted(p.name for p in out.glob("*.png"))
    for name in names:
        with Image.open(out / name) as png:
            png.load()  # a truncated file fails here
            assert png.mode == "L" and (name.startswith(("grid", "prompt")) or png.size == (32, 32)), name
    return names


def test_sample_killed_in_a_png_write_resumes_with_the_finished_images(tmp_path: Path, trained_ldm_ckpt: Path):
    reference = tmp_path / "reference"
    _run("cxr_ldm.sample", _sample_args(trained_ldm_ckpt, reference), tmp_path)
    assert sorted(p.name for p in reference.glob("*.png")) == sorted(NAMES + GRIDS)

    # 1. killed writing the fourth image: the first three are complete, the fourth is no file under its name
    out = tmp_path / "out"
    args = _sample_args(trained_ldm_ckpt, out)
    writing = Path(_kill_in_write("cxr_ldm.sample", args, tmp_path, "01_000.png"))
    assert writing.parent == out and writing.name.startswith(".01_000.png.") and writing.name.endswith(".tmp")
    assert _every_png_opens(out) == NAMES[:3]
    assert json.loads((out / "samples.json").read_text())["complete"] is False
    first = _ids(out / name for name in NAMES[:3])

    # 2. the re-run, killed writing the first grid: every image is complete, no grid is half there
    writing = Path(_kill_in_write("cxr_ldm.sample", args, tmp_path, "grid_00.png"))
    log = (tmp_path / "killed-grid_00.png.log").read_text()
    assert "reusing 3 of 6 images" in log  # only the three missing images were made
    assert _ids(out / name for name in NAMES[:3]) == first
    assert _every_png_opens(out) == NAMES  # the grid being written is not visible under its name
    assert writing.name.startswith(".grid_00.png.")
    assert [p.name for p in out.glob(".*.tmp")] == [writing.name]  # the first kill's temporary file is removed
    manifest = json.loads((out / "samples.json").read_text())
    assert manifest["complete"] is True and [r["file"] for r in manifest["images"]] == NAMES
    images = _ids(out / name for name in NAMES)

    # 3. the same command to the end: no image made again, everything equal to the uninterrupted run's
    log = _run("cxr_ldm.sample", args, tmp_path)
    assert "reusing 6 of 6 images" in log
    assert _ids(out / name for name in NAMES) == images
    assert _every_png_opens(out) == sorted(NAMES + GRIDS)
    for name in NAMES + GRIDS:  # pixel for pixel: image k has seed 5 + k, whatever batch it was made in
        np.testing.assert_array_equal(_pixels(out / name), _pixels(reference / name), err_msg=name)
    assert json.loads((out / "samples.json").read_text()) == json.loads((reference / "samples.json").read_text())
    assert not list(out.glob(".*.tmp"))  # the dead runs' temporary files are removed

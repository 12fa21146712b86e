"""The stage-2 latent cache: equality with online encoding, keys that invalidate, resume, the augmentation conflict.

Real parts throughout: a stage-1 checkpoint trained by a Trainer (``tiny_ae_ckpt``), a folder written by
``prepare`` (``prepared_dir``), the DataModule under a real Trainer, and a real SIGKILL of a build.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import compose_config
from hydra.utils import instantiate
from ldm_fixtures import build_ldm, quiet_trainer
from monai.networks.nets import AutoencoderKL

from cxr_ldm.data.datamodule import CXRDataModule
from cxr_ldm.data.dataset import load_image
from cxr_ldm.data.latent_cache import LatentCache, LatentCacheError, ensure_latent_cache
from cxr_ldm.models.diffusion import read_autoencoder_checkpoint
from cxr_ldm.utils import resolvers  # noqa: F401  (${cwd:} in the paths config)

pytest_plugins = ["ldm_fixtures"]

SIZE = 32
# fp16 storage: half-ulp rounding (relative 2**-11; 2**-10 leaves room for the last bit) plus the float32 noise of
# encoding in batches of another composition, which dominates for values that cancel to about 0 (about 1e-7)
FP16 = {"rtol": 2**-10, "atol": 1e-6}


def _autoencoder(ckpt: Path) -> tuple[AutoencoderKL, dict]:
    arch, state = read_autoencoder_checkpoint(ckpt)
    ae = AutoencoderKL(**arch)
    ae.load_state_dict(state)
    return ae.eval(), arch


def _online(ae: AutoencoderKL, data_dir: Path, split: str, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    frame = pd.read_csv(data_dir / f"{split}.csv", dtype={"dicom_id": str}, keep_default_na=False)
    images = torch.stack([load_image(data_dir / p, size) for p in frame["image"]])
    with torch.no_grad():
        return ae.encode(images)


def _stored(store) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [store[i] for i in range(len(store))]
    return torch.stack([m for m, _ in pairs]), torch.stack([s for _, s in pairs])


def _dm(data_dir: Path, cache_dir: Path | None, **kw) -> CXRDataModule:
    args = dict(
        data_dir=str(data_dir), image_size=SIZE, batch_size=4, num_workers=0, pin_memory=False, seed=3,
        latent_cache=cache_dir is not None, latent_cache_dir=str(cache_dir) if cache_dir else None,
        latent_cache_shard_size=4,
    )  # fmt: skip
    args.update(kw)
    return CXRDataModule(**args)


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        self.keys = sorted(batch)


def _fit(tmp: Path, ae_ckpt: Path, dm: CXRDataModule, steps: int = 3):
    model = build_ldm(ae_ckpt, image_size=SIZE, scale_factor=0.5)
    record = _Losses()
    L.seed_everything(11)
    trainer = quiet_trainer(tmp, max_steps=steps, limit_val_batches=1, callbacks=[record])
    trainer.fit(model, datamodule=dm)
    return model, record, trainer


def test_cached_training_equals_online_training(tmp_path: Path, prepared_dir: Path, tiny_ae_ckpt: Path):
    """Same seed, same batches: cached posteriors give the online posteriors (to fp16) and the same losses."""
    online_model, online, _ = _fit(tmp_path / "a", tiny_ae_ckpt, _dm(prepared_dir, None))
    cache = tmp_path / "cache"
    cached_model, cached, trainer = _fit(tmp_path / "b", tiny_ae_ckpt, _dm(prepared_dir, cache))

    assert "image" in online.keys and "z_mu" not in online.keys
    assert {"z_mu", "z_sigma"} <= set(cached.keys) and "image" not in cached.keys
    np.testing.assert_allclose(cached.losses, online.losses, rtol=2e-3)
    for (name, a), b in zip(online_model.unet.state_dict().items(), cached_model.unet.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=6e-4, msg=name)  # Adam: at most ~lr per step apart

    # the cache holds the very posterior of online encoding, for train and validate
    ae, _ = _autoencoder(tiny_ae_ckpt)
    folders = sorted(p.name.split("-")[0] for p in cache.iterdir())
    assert folders == ["train", "validate"]
    for split in ("train", "validate"):
        store = trainer.datamodule.splits[split].latents
        mu, sigma = _stored(store)
        online_mu, online_sigma = _online(ae, prepared_dir, split)
        torch.testing.assert_close(mu, online_mu, **FP16)
        torch.testing.assert_close(sigma, online_sigma, **FP16)
        assert not torch.equal(mu, online_mu)  # really fp16 values, not a second online encoding
    val = next(iter(trainer.datamodule.val_dataloader()))
    assert {"z_mu", "z_sigma", "image"} <= set(val)  # validation keeps images for callbacks (FID)


def test_a_changed_autoencoder_image_size_or_manifest_never_reuses_a_cache(
    tmp_path: Path, prepared_dir: Path, tiny_ae_ckpt: Path
):
    ae, arch = _autoencoder(tiny_ae_ckpt)
    cache = tmp_path / "cache"
    kw = dict(cache_dir=cache, shard_size=8, progress=False)
    first = ensure_latent_cache(prepared_dir, "train", SIZE, ae, arch, **kw)
    again = ensure_latent_cache(prepared_dir, "train", SIZE, ae, arch, **kw)
    assert again.cache.folder == first.cache.folder and len(list(cache.iterdir())) == 1

    changed = AutoencoderKL(**arch)
    changed.load_state_dict(ae.state_dict())
    with torch.no_grad():
        changed.quant_conv_mu.conv.bias.add_(0.25)
    other = ensure_latent_cache(prepared_dir, "train", SIZE, changed.eval(), arch, **kw)
    assert other.cache.folder != first.cache.folder
    torch.testing.assert_close(_stored(other)[0], _online(changed, prepared_dir, "train")[0], **FP16)
    assert (_stored(other)[0] - _stored(first)[0]).abs().min() > 0.2

    bigger = ensure_latent_cache(prepared_dir, "train", 48, ae, arch, **kw)
    assert bigger.cache.folder not in (first.cache.folder, other.cache.folder)
    assert bigger.latent_shape == (3, 12, 12) and first.latent_shape == (3, 8, 8)

    edited = tmp_path / "edited"
    shutil.copytree(prepared_dir, edited, ignore=shutil.ignore_patterns("latent_cache"))
    frame = pd.read_csv(edited / "train.csv", dtype={"dicom_id": str}, keep_default_na=False)
    frame.iloc[:-1].to_csv(edited / "train.csv", index=False)  # one image fewer
    fewer = ensure_latent_cache(edited, "train", SIZE, ae, arch, **kw)
    assert fewer.cache.folder.name != first.cache.folder.name and len(fewer) == len(first) - 1
    assert len(list(cache.iterdir())) == 4  # four keys, four folders; none was overwritten


KILL_SCRIPT = """
import os, signal, sys
import torch
from monai.networks.nets import AutoencoderKL
from cxr_ldm.data.latent_cache import LatentCache, split_images
from cxr_ldm.models.diffusion import read_autoencoder_checkpoint
from cxr_ldm.utils import resolvers  # noqa: F401  (${cwd:} in the paths config)

ckpt, data_dir, folder = sys.argv[1:4]
arch, state = read_autoencoder_checkpoint(ckpt)
ae = AutoencoderKL(**arch)
ae.load_state_dict(state)
ae.eval()
images = split_images(__import__("pathlib").Path(data_dir), "train", 32)
calls = []

def encode(x):
    calls.append(1)
    if len(calls) == 5:  # after two shards of 4 images (4 batches of 2), killed in the 5th batch
        os.kill(os.getpid(), signal.SIGKILL)
    return ae.encode(x)

LatentCache(folder, len(images), 4).build(encode, images, batch_size=2, progress=False)
"""


def test_a_killed_build_resumes_with_the_shards_it_finished(tmp_path: Path, prepared_dir: Path, tiny_ae_ckpt: Path):
    ae, arch = _autoencoder(tiny_ae_ckpt)
    reference = ensure_latent_cache(prepared_dir, "train", SIZE, ae, arch, cache_dir=tmp_path / "ref", shard_size=4)
    folder = tmp_path / "killed" / reference.cache.folder.name
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(tiny_ae_ckpt), str(prepared_dir), str(folder)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cache = LatentCache(folder, reference.cache.n, 4)
    finished = sorted(p.name for p in folder.glob("shard_*.npy"))
    assert finished == ["shard_00000.npy", "shard_00001.npy"] and not cache.complete()
    (folder / ".shard_00002.npy.999.tmp").write_bytes(b"half a shard")  # what a kill during a write leaves
    before = {name: (folder / name).stat().st_mtime_ns for name in finished}

    with pytest.raises(LatentCacheError, match="lacks .* shards"):
        cache.reader()
    resumed = ensure_latent_cache(prepared_dir, "train", SIZE, ae, arch, cache_dir=folder.parent, shard_size=4)
    assert resumed.cache.folder == folder and resumed.cache.complete()
    assert {name: (folder / name).stat().st_mtime_ns for name in finished} == before  # kept, not redone
    for a, b in zip(_stored(resumed), _stored(reference), strict=True):
        torch.testing.assert_close(a, b, **FP16)


def _two_ranks(tiny_ae_ckpt: Path, build, timeout: float = 120) -> dict:
    """Rank 0 and 1 as threads meeting at a real barrier: ``build(rank, ae, arch, barrier)`` in each; their stores."""
    import threading

    meeting = threading.Barrier(2, timeout=timeout)
    stores, errors = {}, []

    def rank(r: int) -> None:
        try:
            ae, arch = _autoencoder(tiny_ae_ckpt)
            stores[r] = build(r, ae, arch, meeting.wait)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return stores


def test_ranks_split_the_shards(tmp_path: Path, prepared_dir: Path, tiny_ae_ckpt: Path, caplog):
    """Two ranks: rank r encodes shards r, r+2, ... and nothing twice."""
    import logging

    caplog.set_level(logging.INFO, logger="cxr_ldm.data.latent_cache")
    stores = _two_ranks(tiny_ae_ckpt, lambda r, ae, arch, barrier: ensure_latent_cache(
        prepared_dir, "train", SIZE, ae, arch, cache_dir=tmp_path / "c", shard_size=4,
        rank=r, world_size=2, barrier=barrier, progress=False,
    ))  # fmt: skip
    n = stores[0].cache.n_shards
    assert n >= 4 and stores[0].cache.complete()
    lines = sorted(m for m in caplog.messages if "encoded" in m)
    assert lines == [
        f"latent cache: rank 0 of 2 encoded {(n + 1) // 2} shard(s) of {stores[0].cache.folder.name}",
        f"latent cache: rank 1 of 2 encoded {n // 2} shard(s) of {stores[0].cache.folder.name}",
    ]
    ae, _ = _autoencoder(tiny_ae_ckpt)
    torch.testing.assert_close(_stored(stores[1])[0], _online(ae, prepared_dir, "train")[0], **FP16)


def test_a_rank_that_finds_the_cache_already_built_still_meets_the_others(
    tmp_path: Path, prepared_dir: Path, tiny_ae_ckpt: Path, caplog
):
    """A one-shard split under 2 ranks: rank 1 looks at the folder only after rank 0 has written the shard. Rank 1
    has nothing to encode, yet it must reach the barrier rank 0 waits in (CI hung 900 s on a DDP training run when
    a slow rank 1 found the validation shard written and went on without it)."""
    import logging
    import time

    caplog.set_level(logging.INFO, logger="cxr_ldm.data.latent_cache")
    folder = tmp_path / "c"

    def build(r, ae, arch, barrier):
        if r == 1:  # the slow rank: the one shard is written before it looks
            deadline = time.monotonic() + 120
            while not list(folder.glob("*/shard_00000.npy")) and time.monotonic() < deadline:
                time.sleep(0.05)
        return ensure_latent_cache(prepared_dir, "validate", SIZE, ae, arch, cache_dir=folder, shard_size=10_000,
                                   rank=r, world_size=2, barrier=barrier, progress=False)  # fmt: skip

    stores = _two_ranks(tiny_ae_ckpt, build, timeout=60)
    assert stores[0].cache.n_shards == 1 and stores[1].cache.complete()
    name = stores[0].cache.folder.name
    assert sorted(m for m in caplog.messages if "encoded" in m) == [
        f"latent cache: rank 0 of 2 encoded 1 shard(s) of {name}",
        f"latent cache: rank 1 of 2 encoded 0 shard(s) of {name}",
    ]


def test_cache_and_augmentation_exclude_each_other(prepared_dir: Path):
    message = "data.latent_cache=true and data.augment.enabled=true exclude each other"
    with pytest.raises(ValueError, match=message):
        _dm(prepared_dir, prepared_dir / "unused", augment={"enabled": True})
    cfg = compose_config("train", ["experiment=ldm_phantom", "data.latent_cache=true", "data.augment.enabled=true"])
    with pytest.raises(Exception, match=message):
        instantiate(cfg.data, _convert_="all")


def test_stage_one_with_a_cache_stops_with_a_clear_message(tmp_path: Path, prepared_dir: Path):
    from helpers import TINY_AUTOENCODER

    from cxr_ldm.models.autoencoder import AutoencoderKLModule

    module = AutoencoderKLModule(
        autoencoder=TINY_AUTOENCODER,
        discriminator={"spatial_dims": 2, "in_channels": 1, "channels": 8, "num_layers_d": 1},
        perceptual_weight=0.0,
    )
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    with pytest.raises(LatentCacheError, match="this run trains AutoencoderKLModule.*data.latent_cache=false"):
        trainer.fit(module, datamodule=_dm(prepared_dir, tmp_path / "cache"))


@pytest.mark.slow
def test_ddp_training_run_builds_the_cache_once_split_over_ranks(tmp_path: Path, tiny_ae_ckpt: Path):
    """``python -m cxr_ldm.train experiment=ldm_phantom data.latent_cache=true`` on 2 CPU ranks (gloo): each
    rank encodes its share of the shards once, DDP trains on them and the checkpoint keeps plain keys. (Compiling
    the UNet took most of this test's time on 2 cores; ``model.compile``'s keys and exact resume are checked in
    tests/models/test_speed.py.)"""
    from helpers import run_module

    data = tmp_path / "data"
    args = [
        "experiment=ldm_phantom", f"paths.data_dir={data}", f"hydra.run.dir={tmp_path / 'run'}",
        f"model.autoencoder_ckpt={tiny_ae_ckpt}", "data.latent_cache=true", "data.latent_cache_shard_size=8",
        "debug=tiny", "data.batch_size=4", "trainer=ddp_cpu", "callbacks=none",
    ]  # fmt: skip
    proc = run_module("cxr_ldm.train", *args, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout + proc.stderr
    folders = {p.name.split("-")[0]: p for p in (next(data.glob("phantom/prepared_*")) / "latent_cache").iterdir()}
    assert sorted(folders) == ["train", "validate"]
    for split, folder in folders.items():
        n = len(pd.read_csv(folder.parents[1] / f"{split}.csv"))
        cache = LatentCache(folder, n, 8)
        assert cache.complete() and (folder / "meta.json").is_file()
        for rank in (0, 1):
            share = len(range(rank, cache.n_shards, 2))
            assert f"rank {rank} of 2 encoded {share} shard(s) of {folder.name}" in out, out[-3000:]
    checkpoints = list((tmp_path / "run").rglob("*.ckpt"))
    assert checkpoints
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("unet.") for k in state) and not any("_orig_mod" in k for k in state)


def test_a_file_that_is_no_stage_one_checkpoint_is_refused_in_one_line(tmp_path: Path):
    """What cache_latents and stage 2 read the autoencoder with: the same lines as the training run's check."""
    from cxr_ldm.utils.checkpoints import CheckpointFileError

    text, plain = tmp_path / "notes.ckpt", tmp_path / "weights.pt"
    text.write_text("not a checkpoint\n")
    torch.save({"autoencoder.weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointFileError) as refused:
        read_autoencoder_checkpoint(text)
    assert str(refused.value) == f"model.autoencoder_ckpt={text}: a text file, not a checkpoint written by torch.save"
    with pytest.raises(CheckpointFileError) as refused:
        read_autoencoder_checkpoint(plain)
    assert str(refused.value) == (
        f"model.autoencoder_ckpt={plain}: a plain state dict, not a stage-1 checkpoint of cxr_ldm (train one with "
        "`python -m cxr_ldm.train experiment=aekl` and pass its checkpoints/last.ckpt)"
    )


@pytest.mark.slow
def test_cache_latents_command_builds_what_training_then_reads(tmp_path: Path, tiny_ae_ckpt: Path, caplog):
    """``python -m cxr_ldm.cache_latents`` with a training run's overrides: the run finds every shard built."""
    import logging

    from helpers import run_module

    data = tmp_path / "data"
    args = [
        "experiment=ldm_phantom", f"paths.data_dir={data}", f"hydra.run.dir={tmp_path / 'cache_run'}",
        f"model.autoencoder_ckpt={tiny_ae_ckpt}", "debug=tiny", "data.latent_cache_shard_size=8", "+cache_device=cpu",
    ]  # fmt: skip
    proc = run_module("cxr_ldm.cache_latents", *args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train:" in proc.stdout and "validate:" in proc.stdout
    prepared = next(data.glob("phantom/prepared_*"))
    shards = {p: p.stat().st_mtime_ns for p in (prepared / "latent_cache").rglob("shard_*.npy")}
    assert shards

    caplog.set_level(logging.INFO, logger="cxr_ldm.data.latent_cache")
    dm = CXRDataModule(data_dir=str(prepared), image_size=32, batch_size=4, num_workers=0, pin_memory=False,
                       latent_cache=True, latent_cache_shard_size=8)  # fmt: skip
    model = build_ldm(tiny_ae_ckpt, image_size=32, scale_factor=0.5)
    quiet_trainer(tmp_path, max_steps=2, limit_val_batches=1).fit(model, datamodule=dm)
    assert not [m for m in caplog.messages if "encoded" in m]  # nothing was encoded again
    assert {p: p.stat().st_mtime_ns for p in (prepared / "latent_cache").rglob("shard_*.npy")} == shards

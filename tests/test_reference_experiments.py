"""One training step of each reference experiment (``aekl``, ``ldm``) on prepared phantom data, CPU, small images.

The reference networks are real (4.6 M + 2.8 M stage-1 parameters, a 263.6 M-parameter UNet and the 354 M-parameter
ViT-H-14 text tower); only the image size, the device and the logger are changed. Weights that users bring (LPIPS's
squeezenet, SD 2.1's text encoder) are written here as random-weight files in the real formats and read through the
same loading code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from helpers import run_module

ONE_STEP = ["trainer=cpu", "logger=csv", "trainer.precision=32-true", "trainer.limit_train_batches=1", "trainer.max_epochs=1",
            "trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=1", "data.image_size=64", "data.batch_size=2", "data.num_workers=0",
            "data.pin_memory=false", "print_config=false"]  # fmt: skip


@pytest.fixture(scope="module")
def prepared(phantom_prepared) -> Path:
    return phantom_prepared(n_studies=30, raw_size=96, size=64)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(),
               home / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth")  # fmt: skip
    return home


@pytest.fixture(scope="module")
def aekl_ckpt(prepared, torch_home, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("aekl_ref") / "run"
    proc = run_module(
        "cxr_ldm.train", "experiment=aekl", f"data.data_dir={prepared}", f"hydra.run.dir={run_dir}", *ONE_STEP,
        cwd=run_dir.parent, env={"TORCH_HOME": str(torch_home)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir / "checkpoints" / "last.ckpt"


def test_aekl_reference_trains_one_step(aekl_ckpt):
    ckpt = torch.load(aekl_ckpt, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 1
    n_ae = sum(v.numel() for k, v in ckpt["state_dict"].items() if k.startswith("autoencoder."))
    assert n_ae == 4_607_848
    assert ckpt["hyper_parameters"]["perceptual_weight"] == 0.002
    assert not any("perceptual" in k for k in ckpt["state_dict"])  # LPIPS is never stored


def test_ldm_reference_trains_one_step(aekl_ckpt, prepared, tmp_path):
    from open_clip import get_model_config
    from open_clip.model import CLIPTextCfg, _build_text_tower

    text_cfg = get_model_config("ViT-H-14")["text_cfg"]
    tower = _build_text_tower(1024, CLIPTextCfg(**text_cfg))  # random weights, open_clip's own key names
    weights = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({k: v.to(torch.bfloat16) for k, v in tower.state_dict().items()}, weights)
    del tower
    run_dir = tmp_path / "run"
    proc = run_module(
        "cxr_ldm.train", "experiment=ldm", f"data.data_dir={prepared}", f"hydra.run.dir={run_dir}",
        f"model.autoencoder_ckpt={aekl_ckpt}", f"model.text_encoder.weights_path={weights}", *ONE_STEP,
        "data.batch_size=1", "sampling.steps=2", "callbacks.sample_grid.n_per_prompt=1",
        "callbacks.model_checkpoint.save_top_k=0",  # last.ckpt only: one 4 GB file (UNet, EMA, Adam), not two
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    # mmap: the asserts read the keys, shapes and hyper-parameters, not the 4 GB of tensors
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
    assert ckpt["global_step"] == 1
    n_unet = sum(v.numel() for k, v in ckpt["state_dict"].items() if k.startswith("unet."))
    assert n_unet == 263_636_995
    assert not any(k.startswith("text_encoder.") for k in ckpt["state_dict"])  # read again from its file
    hp = ckpt["hyper_parameters"]
    assert hp["scheduler"]["prediction_type"] == "v_prediction" and hp["scheduler"]["num_train_timesteps"] == 1000

"""``python -m cxr_ldm.export``, ``from_pretrained`` (JSON + safetensors only), the model card, fine-tuning
from an exported folder (``model.init_from``) and the errors of a refused export."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from helpers import run_module
from safetensors.torch import load_file

from cxr_ldm.models.components import ModelLoadError
from cxr_ldm.pipelines import CXRLDMPipeline

pytest_plugins = ["ldm_fixtures"]

PROMPTS = ["Large right pleural effusion.", "Moderate cardiomegaly."]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, jittered_ckpt: Path) -> Path:
    """The jittered checkpoint exported by the command, with a metrics.json beside it for the model card."""
    root = tmp_path_factory.mktemp("export")
    (jittered_ckpt.parent / "metrics.json").write_text(json.dumps({"fid": {"value": 12.5, "n_real": 10}}))
    out = root / "exported"
    result = run_module("cxr_ldm.export", f"ckpt={jittered_ckpt}", f"out_dir={out}", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_layout_and_contents(exported: Path, jittered_ckpt: Path):
    index = json.loads((exported / "model_index.json").read_text())
    assert index["_class_name"] == "CXRLDMPipeline" and index["latent_shape"] == [3, 8, 8]
    assert index["defaults"] == {"sampler": "ddim", "num_inference_steps": 50, "guidance_scale": 7.0,
                                 "timestep_spacing": "linspace"}  # fmt: skip
    for part in ("autoencoder", "unet"):
        assert (exported / part / "config.json").is_file()
        assert (exported / part / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((exported / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"
    text = json.loads((exported / "text_encoder" / "config.json").read_text())
    assert text["seed"] == 0 and text["stored_weights"] == "model.safetensors"  # a seeded tower: its weights are here
    # the UNet weights are the EMA copy, and the scale factor is the checkpoint's measured one
    ckpt = torch.load(jittered_ckpt, map_location="cpu", weights_only=True)
    unet = load_file(str(exported / "unet" / "diffusion_pytorch_model.safetensors"))
    ema = {k.removeprefix("ema.module."): v for k, v in ckpt["state_dict"].items() if k.startswith("ema.module.")}
    assert unet.keys() == ema.keys() and all(torch.equal(unet[k], ema[k]) for k in ema)
    assert index["scale_factor"] == pytest.approx(float(ckpt["state_dict"]["scale_factor"]))


def test_model_card(exported: Path):
    card = (exported / "README.md").read_text()
    for text in ("## Model", "## Training data and settings", "## Evaluation", "## Intended use", "## Data use",
                 "PhysioNet Credentialed Health Data Use Agreement", "Not for clinical use", "| fid | value 12.5"):
        assert text in card, text  # fmt: skip


def test_from_pretrained_reads_no_pickle_and_samples_bit_identically(
    exported: Path, jittered_ckpt: Path, monkeypatch: pytest.MonkeyPatch
):
    reference = CXRLDMPipeline.from_checkpoint(jittered_ckpt)(PROMPTS, seeds=[3, 4], num_inference_steps=3,
                                                              progress=False)  # fmt: skip

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained must not unpickle anything")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    pipe = CXRLDMPipeline.from_pretrained(exported)
    images = pipe(PROMPTS, seeds=[3, 4], num_inference_steps=3, progress=False)
    assert torch.equal(images, reference)
    assert CXRLDMPipeline.load(exported).components.source["kind"] == "exported"


def test_save_pretrained_round_trip_keeps_changed_defaults(tmp_path: Path, exported: Path):
    pipe = CXRLDMPipeline.from_pretrained(exported)
    pipe.default_sampler, pipe.default_num_inference_steps = "ddim", 50
    out = pipe.save_pretrained(tmp_path / "again")
    again = CXRLDMPipeline.from_pretrained(out)
    assert (again.default_sampler, again.default_num_inference_steps) == ("ddim", 50)


def test_refused_exports_leave_nothing_behind(tmp_path: Path, jittered_ckpt: Path, exported: Path):
    result = run_module("cxr_ldm.export", f"ckpt={tmp_path / 'nope.ckpt'}", f"out_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ckpt not found:")
    assert not (tmp_path / "out").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    result = run_module("cxr_ldm.export", f"ckpt={jittered_ckpt}", f"out_dir={busy}", cwd=tmp_path)
    assert "exists and is not empty: choose another folder or overwrite=true" in result.stderr
    assert [p.name for p in busy.iterdir()] == ["keep.txt"] and not list(tmp_path.glob(".busy.*"))
    missing = run_module("cxr_ldm.export", f"out_dir={tmp_path / 'x'}", cwd=tmp_path)
    assert missing.returncode == 2 and "ckpt=" in missing.stderr


def test_incomplete_folder_names_the_missing_file(tmp_path: Path, exported: Path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"unet/diffusion_pytorch_model.safetensors is missing: .*export it again"):
        CXRLDMPipeline.from_pretrained(broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="is not a readable safetensors file"):
        CXRLDMPipeline.from_pretrained(broken)


def test_fine_tune_from_an_exported_folder(tmp_path: Path, exported: Path):
    """``model.init_from=DIR``: stage 2 starts from the folder's UNet and autoencoder, without a stage-1 file."""
    from cxr_ldm.models.diffusion import LatentDiffusionModule

    run_dir = tmp_path / "run"
    result = run_module(
        "cxr_ldm.train", "experiment=ldm_phantom", f"model.init_from={exported}", "model.ema_decay=null",
        "debug=tiny", "data.phantom.n_studies=40", "data.batch_size=4", "trainer.limit_train_batches=1", "sampling.steps=2",
        "model.optimizer.lr=0", f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    tuned = LatentDiffusionModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    start = CXRLDMPipeline.from_pretrained(exported).components
    assert tuned.hparams.unet == start.configs["unet"] and tuned.hparams.autoencoder_ckpt is None
    assert float(tuned.scale_factor) == pytest.approx(start.scale_factor)
    # lr 0: after one step the UNet still holds the folder's weights (AdamW's weight decay is scaled by lr too)
    for name, value in start.unet.state_dict().items():
        assert torch.equal(tuned.unet.state_dict()[name], value), name
    for name, value in start.autoencoder.state_dict().items():
        assert torch.equal(tuned.autoencoder.state_dict()[name], value), name

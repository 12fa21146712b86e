"""The released MONAI bundle: ``configs/inference.json`` + old-format weights + SD 2.1's transformers text encoder.

The bundle here is tiny but in the real formats: networks of the archived monai-generative package write the
weight files (its key format), transformers writes the ``text_encoder/`` folder. The reference loop below runs
those original networks and transformers' ``CLIPTextModel`` with MONAI 1.4's DDIM written out, independently of
the project's reader, converter (MONAI core's ``load_old_state_dict``), text tower and sampler.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cxr_ldm.data.tokenization import tokenize
from cxr_ldm.models.components import ModelLoadError
from cxr_ldm.models.text_encoder import FrozenOpenCLIPTextEncoder
from cxr_ldm.pipelines import CXRLDMPipeline

pytest_plugins = ["ldm_fixtures"]

generative = pytest.importorskip("generative.networks.nets", reason="monai-generative (dev extra) writes old weights")
transformers = pytest.importorskip("transformers")

AE = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "latent_channels": 3, "num_res_blocks": 1,
      "norm_num_groups": 8, "norm_eps": 1e-06, "attention_levels": [False, False, False],
      "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False}  # fmt: skip
UNET = {"spatial_dims": 2, "in_channels": 3, "out_channels": 3, "num_res_blocks": 1,
        "attention_levels": [False, True, True], "norm_num_groups": 8, "norm_eps": 1e-06, "resblock_updown": False,
        "num_head_channels": [0, 16, 16], "with_conditioning": True, "transformer_num_layers": 1,
        "cross_attention_dim": 64}  # fmt: skip
SCHEDULER = {"_target_": "monai.networks.schedulers.DDIMScheduler", "beta_start": 0.0015, "beta_end": 0.0205,
             "num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "prediction_type": "v_prediction",
             "clip_sample": False}  # fmt: skip
PROMPT = "Big right-sided pleural effusion"


def _jitter(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (MONAI zero-initialises some projections, which would hide the text)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return module.eval()


def inference_json(ae_file: str = "autoencoder.pth", unet_file: str = "diffusion_model.pth") -> dict:
    return {
        "bundle_root": ".", "load_old": 1, "model_dir": "$@bundle_root + '/models'",
        "prompt": PROMPT, "prompt_list": "$['', @prompt]", "guidance_scale": 7.0,
        "autoencoder_def": {"_target_": "monai.networks.nets.AutoencoderKL", **AE, "channels": [8, 16, 16]},
        "load_autoencoder_path": f"$@model_dir + '/{ae_file}'",
        "diffusion_def": {"_target_": "monai.networks.nets.DiffusionModelUNet", **UNET, "channels": [16, 32, 32]},
        "load_diffusion_path": f"$@model_dir + '/{unet_file}'",
        "scheduler": {**SCHEDULER, "_requires_": ["@load_diffusion", "@load_autoencoder"]},
        "noise": "$torch.randn((1, 3, 8, 8)).to(@device)",
        "set_timesteps": "$@scheduler.set_timesteps(num_inference_steps=50)",
    }  # fmt: skip


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bundle")
    folder = root / "cxr_image_synthesis_latent_diffusion_model"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps(inference_json(), indent=4))
    torch.manual_seed(0)
    old_ae = _jitter(generative.AutoencoderKL(**AE, num_channels=(8, 16, 16)), 1)
    old_unet = _jitter(generative.DiffusionModelUNet(**UNET, num_channels=(16, 32, 32)), 2)
    torch.save(old_ae.state_dict(), folder / "models" / "autoencoder.pth")
    torch.save(old_unet.state_dict(), folder / "models" / "diffusion_model.pth")
    config = transformers.CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                                         num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu",
                                         bos_token_id=49406, eos_token_id=49407, pad_token_id=0)  # fmt: skip
    text = transformers.CLIPTextModel(config).eval()
    text.save_pretrained(root / "sd21" / "text_encoder")
    return {"folder": folder, "text_dir": root / "sd21" / "text_encoder", "sd_root": root / "sd21",
            "old_ae": old_ae, "old_unet": old_unet, "text": text}  # fmt: skip


def test_text_encoder_equals_transformers_last_hidden_state(bundle: dict):
    encoder = FrozenOpenCLIPTextEncoder(weights_path=str(bundle["text_dir"]))
    tokens = tokenize(["", PROMPT, "No acute cardiopulmonary process. Heart size is normal."])
    assert tokens[0, :3].tolist() == [49406, 49407, 0]  # SD 2.x pads with "!" = 0
    with torch.no_grad():
        reference = bundle["text"](input_ids=tokens).last_hidden_state
    ours = encoder(tokens)
    assert ((ours - reference).norm() / reference.norm()).item() < 1e-4
    # the SD root (holding text_encoder/) is accepted too
    assert torch.equal(FrozenOpenCLIPTextEncoder(weights_path=str(bundle["sd_root"]))(tokens), ours)


def reference_sample(bundle: dict, seed: int, steps: int, guidance: float = 7.0) -> torch.Tensor:
    """The bundle's sampler with MONAI 1.4's DDIM, written out, on the original networks."""
    with torch.no_grad():
        tokens = tokenize(["", PROMPT])
        context = bundle["text"](input_ids=tokens).last_hidden_state
        alphas = torch.cumprod(1 - torch.linspace(0.0015**0.5, 0.0205**0.5, 1000, dtype=torch.float32) ** 2, 0)
        x = torch.randn((1, 3, 8, 8), generator=torch.Generator().manual_seed(seed))
        stride = 1000 // steps
        for t in range(stride * (steps - 1), -1, -stride):
            out = bundle["old_unet"](torch.cat([x, x]), timesteps=torch.tensor([t, t]), context=context)
            uncond, cond = out.chunk(2)
            v = uncond + guidance * (cond - uncond)
            a = alphas[t]
            a_prev = alphas[t - stride] if t - stride >= 0 else torch.tensor(1.0)
            x0, eps = a.sqrt() * x - (1 - a).sqrt() * v, a.sqrt() * v + (1 - a).sqrt() * x
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        return bundle["old_ae"].decode_stage_2_outputs(x / 0.3).clamp(0, 1)


def test_bundle_samples_like_its_own_loop(bundle: dict):
    pipe = CXRLDMPipeline.from_monai_bundle(bundle["folder"], text_encoder=bundle["text_dir"])
    assert (pipe.default_sampler, pipe.default_num_inference_steps, pipe.default_guidance_scale) == ("ddim", 50, 7.0)
    assert (pipe.timestep_spacing, pipe.scale_factor, pipe.latent_shape) == ("leading", 0.3, (3, 8, 8))
    ours = pipe([PROMPT], seeds=[7], num_inference_steps=4, progress=False)
    expected = reference_sample(bundle, seed=7, steps=4)
    assert ours.shape == (1, 1, 32, 32)
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-4)
    assert (expected - reference_sample(bundle, seed=8, steps=4)).abs().max() > 1e-3  # the seed matters
    other = pipe(["No acute cardiopulmonary process."], seeds=[7], num_inference_steps=4, progress=False)
    assert (other - ours).abs().max() > 1e-2 and 0.05 < float((ours > 0).float().mean()) < 0.95  # the text matters
    assert CXRLDMPipeline.load(bundle["folder"], text_encoder=bundle["text_dir"]).components.source["kind"] == "monai_bundle"


def test_new_file_names_and_errors(tmp_path: Path, bundle: dict):
    import shutil

    folder = tmp_path / "bundle"
    shutil.copytree(bundle["folder"], folder)
    (folder / "models" / "autoencoder.pth").rename(folder / "models" / "autoencoder.pt")
    (folder / "models" / "diffusion_model.pth").rename(folder / "models" / "model.pt")
    pipe = CXRLDMPipeline.from_monai_bundle(folder, text_encoder=bundle["text_dir"])  # the bundle 1.0.x names
    assert pipe.components.source["weights"][1].endswith("models/model.pt")
    with pytest.raises(ModelLoadError, match="the MONAI bundle needs its text encoder: give text_encoder=PATH"):
        CXRLDMPipeline.load(folder)
    (folder / "models" / "model.pt").unlink()
    with pytest.raises(ModelLoadError, match=r"no unet weights \(diffusion_model.pth or model.pt\).*monai.bundle download"):
        CXRLDMPipeline.from_monai_bundle(folder, text_encoder=bundle["text_dir"])
    with pytest.raises(FileNotFoundError, match="text_encoder/ folder of https://huggingface.co/stabilityai"):
        CXRLDMPipeline.from_monai_bundle(bundle["folder"], text_encoder=tmp_path / "no_such_folder")
    wrong = json.loads((folder / "configs" / "inference.json").read_text())
    wrong["diffusion_def"]["cross_attention_dim"] = 1024
    (folder / "configs" / "inference.json").write_text(json.dumps(wrong))
    shutil.copy(bundle["folder"] / "models" / "diffusion_model.pth", folder / "models" / "model.pt")
    with pytest.raises(ModelLoadError, match="the text encoder gives 64-wide tokens but the UNet's cross_attention_dim"):
        CXRLDMPipeline.from_monai_bundle(folder, text_encoder=bundle["text_dir"])


def test_export_and_fine_tune_from_the_bundle(tmp_path: Path, bundle: dict):
    """The bundle exports to a folder that samples identically, and stage 2 can start from its networks."""
    from cxr_ldm.models.diffusion import LatentDiffusionModule

    pipe = CXRLDMPipeline.from_monai_bundle(bundle["folder"], text_encoder=bundle["text_dir"])
    out = pipe.save_pretrained(tmp_path / "exported")
    again = CXRLDMPipeline.from_pretrained(out)
    assert again.timestep_spacing == "leading"
    kwargs = {"seeds": [3], "num_inference_steps": 3, "progress": False}
    assert torch.equal(again([PROMPT], **kwargs), pipe([PROMPT], **kwargs))

    module = LatentDiffusionModule(
        unet={"in_channels": 3, "out_channels": 3, "with_conditioning": True, "cross_attention_dim": 64},
        text_encoder={"weights_path": str(bundle["text_dir"])}, init_from=str(bundle["folder"]), ema_decay=None,
    )  # fmt: skip
    assert module.hparams.unet["channels"] == [16, 32, 32] and float(module.scale_factor) == pytest.approx(0.3)
    for name, value in pipe.unet.state_dict().items():
        assert torch.equal(module.unet.state_dict()[name], value), name

"""``CXRLDMPipeline``: loading, output types, seeds, batch invariance, guidance, EMA weights and argument checks."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_ldm.models.components import ModelLoadError
from cxr_ldm.models.diffusion import LatentDiffusionModule
from cxr_ldm.pipelines import SAMPLERS, CXRLDMPipeline

pytest_plugins = ["ldm_fixtures"]

PROMPTS = ["Large right pleural effusion.", "Moderate cardiomegaly.", "No acute cardiopulmonary process."]
FAST = {"num_inference_steps": 3, "progress": False}


@pytest.fixture(scope="module")
def pipe(jittered_ckpt: Path) -> CXRLDMPipeline:
    return CXRLDMPipeline.from_checkpoint(jittered_ckpt)


@pytest.fixture(scope="module")
def module(jittered_ckpt: Path) -> LatentDiffusionModule:
    return LatentDiffusionModule.load_from_checkpoint(jittered_ckpt, map_location="cpu")


def test_defaults_and_shapes(pipe: CXRLDMPipeline):
    assert (pipe.default_sampler, pipe.default_num_inference_steps, pipe.default_guidance_scale) == ("ddim", 50, 7.0)
    assert pipe.latent_shape == (3, 8, 8) and pipe.timestep_spacing == "linspace"
    context = pipe.encode_prompts(PROMPTS)
    assert context.shape == (3, 77, 64)
    torch.testing.assert_close(pipe.encode_prompts([""]), pipe.unconditional_context())


def test_output_types(pipe: CXRLDMPipeline):
    pt = pipe(PROMPTS[:2], seeds=[5, 6], **FAST)
    assert pt.shape == (2, 1, 32, 32) and pt.dtype == torch.float32 and pt.device.type == "cpu"
    assert pt.min() >= 0 and pt.max() <= 1
    arr = pipe(PROMPTS[:2], seeds=[5, 6], output_type="np", **FAST)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32 and np.array_equal(arr, pt.numpy())
    pil = pipe(PROMPTS[:2], seeds=[5, 6], output_type="pil", **FAST)
    assert [im.mode for im in pil] == ["L", "L"] and pil[0].size == (32, 32)
    assert np.array_equal(np.asarray(pil[1]), (pt[1, 0] * 255).round().to(torch.uint8).numpy())
    assert isinstance(pil[0], Image.Image)


def test_checkpoint_and_module_pipelines_agree(pipe: CXRLDMPipeline, module: LatentDiffusionModule):
    a = pipe(PROMPTS, seeds=[1, 2, 3], **FAST)
    b = CXRLDMPipeline.from_module(module)(PROMPTS, seeds=[1, 2, 3], **FAST)
    assert torch.equal(a, b)


def test_seeds_and_latents(pipe: CXRLDMPipeline):
    a = pipe(PROMPTS, seeds=[5, 6, 7], **FAST)
    assert torch.equal(a, pipe(PROMPTS, seeds=[5, 6, 7], **FAST))
    c = pipe(PROMPTS, seeds=[5, 6, 8], **FAST)
    assert torch.equal(a[:2], c[:2]) and not torch.allclose(a[2], c[2])
    # initial noise is torch.Generator().manual_seed(seed) on the CPU, unscaled
    noise = torch.stack([torch.randn(pipe.latent_shape, generator=torch.Generator().manual_seed(s)) for s in (5, 6, 7)])
    assert torch.equal(pipe(PROMPTS, latents=noise, **FAST), a)
    assert torch.equal(pipe(PROMPTS, latents=noise, seeds=[0, 0, 0], **FAST), a)  # latents override seeds
    assert torch.equal(pipe(PROMPTS, **FAST), pipe(PROMPTS, seeds=[0, 1, 2], **FAST))  # default seeds 0..N-1


@pytest.mark.parametrize(("sampler", "eta"), [(s, 0.0) for s in SAMPLERS] + [("ddim", 1.0)])
def test_image_alone_equals_image_in_a_batch(pipe: CXRLDMPipeline, sampler: str, eta: float):
    kwargs = {"sampler": sampler, "eta": eta, **FAST}
    batch = pipe(PROMPTS, seeds=[10, 11, 12], **kwargs)
    alone = pipe(PROMPTS[1:2], seeds=[11], **kwargs)
    split = pipe(PROMPTS, seeds=[10, 11, 12], batch_size=2, **kwargs)
    torch.testing.assert_close(alone[0], batch[1], rtol=0, atol=1e-4)
    torch.testing.assert_close(split, batch, rtol=0, atol=1e-4)
    assert not torch.allclose(batch[0], batch[1], atol=1e-2)


def test_stochastic_samplers_use_their_step_noise(pipe: CXRLDMPipeline):
    deterministic = pipe(PROMPTS[:1], seeds=[3], sampler="ddim", **FAST)
    stochastic = pipe(PROMPTS[:1], seeds=[3], sampler="ddim", eta=1.0, **FAST)
    assert not torch.allclose(deterministic, stochastic, atol=1e-3)
    assert torch.equal(stochastic, pipe(PROMPTS[:1], seeds=[3], sampler="ddim", eta=1.0, **FAST))


def test_guidance_zero_is_the_empty_prompt_sampled_conditionally(pipe: CXRLDMPipeline):
    """With g=0 only the unconditional branch counts; it must equal conditioning on "" (training's dropped text)."""
    uncond = pipe(["Large right pleural effusion."], seeds=[4], guidance_scale=0.0, **FAST)
    empty = pipe([""], seeds=[4], guidance_scale=1.0, **FAST)
    torch.testing.assert_close(uncond, empty, rtol=0, atol=1e-5)
    guided = pipe(["Large right pleural effusion."], seeds=[4], guidance_scale=7.0, **FAST)
    assert not torch.allclose(guided, uncond, atol=1e-3)


def test_sampling_uses_the_ema_weights(module: LatentDiffusionModule):
    module = copy.deepcopy(module)
    with_ema = CXRLDMPipeline.from_module(module)(PROMPTS[:2], seeds=[1, 2], **FAST)
    ema_weights = copy.deepcopy(module.ema.module.state_dict())
    module.ema = None
    online = CXRLDMPipeline.from_module(module)(PROMPTS[:2], seeds=[1, 2], **FAST)
    assert not torch.allclose(with_ema, online, atol=1e-4)  # the EMA and the online UNet differ
    module.unet.load_state_dict(ema_weights)
    assert torch.equal(CXRLDMPipeline.from_module(module)(PROMPTS[:2], seeds=[1, 2], **FAST), with_ema)


def test_module_modes_and_grad_flags_are_restored(module: LatentDiffusionModule):
    module = copy.deepcopy(module)
    module.ema = None  # sampling then uses the UNet being trained
    module.train()
    CXRLDMPipeline.from_module(module)(PROMPTS[:1], num_inference_steps=1, progress=False)
    assert module.unet.training and not module.autoencoder.training
    assert all(p.requires_grad for p in module.unet.parameters())


def test_argument_errors(pipe: CXRLDMPipeline):
    with pytest.raises(ValueError, match="one seed per prompt"):
        pipe(PROMPTS, seeds=[0], **FAST)
    with pytest.raises(ValueError, match="unknown sampler 'heun'"):
        pipe(PROMPTS[:1], sampler="heun", **FAST)
    with pytest.raises(ValueError, match="output_type"):
        pipe(PROMPTS[:1], output_type="jpg", **FAST)
    with pytest.raises(ValueError, match=r"latents must be \[1, 3, 8, 8\]"):
        pipe(PROMPTS[:1], latents=torch.zeros(1, 3, 4, 4), **FAST)
    with pytest.raises(ValueError, match="eta applies to sampler=ddim only"):
        pipe(PROMPTS[:1], sampler="euler", eta=0.5, **FAST)
    problems = pipe.prompt_problems(["ok", " ", "effusion " * 80])
    assert problems[0] == "prompt 1 is empty" and problems[1] == "prompt 2 has 162 tokens, over the 77 the text encoder reads"  # 2 BPE tokens a word


def test_load_picks_the_kind_and_explains_wrong_paths(tmp_path: Path, jittered_ckpt: Path):
    assert CXRLDMPipeline.load(jittered_ckpt).components.source["kind"] == "checkpoint"
    with pytest.raises(ModelLoadError, match="model not found: .*missing.ckpt.*python -m cxr_ldm.export"):
        CXRLDMPipeline.load(tmp_path / "missing.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="neither known kind: expected an exported model"):
        CXRLDMPipeline.load(tmp_path / "empty")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(jittered_ckpt.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match=r"model=.*truncated.ckpt: the file is truncated \(5,000 bytes"):
        CXRLDMPipeline.load(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(ModelLoadError, match="is not a stage-2 checkpoint of cxr_ldm"):
        CXRLDMPipeline.load(foreign)

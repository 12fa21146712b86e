"""``generate``: seeds, batch invariance, guidance, EMA weights, samplers and mode handling."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

from cxr_ldm.models.diffusion import LatentDiffusionModule
from cxr_ldm.models.sampling import generate, make_sampling_scheduler

pytest_plugins = ["ldm_fixtures"]

PROMPTS = ["Large right pleural effusion.", "Moderate cardiomegaly.", "No acute cardiopulmonary process."]
FAST = {"num_inference_steps": 3, "progress": False}


@pytest.fixture(scope="module")
def model(trained_ldm_ckpt: Path) -> LatentDiffusionModule:
    """The trained tiny LDM with its UNets' weights jittered.

    MONAI zero-initialises the attention output projections, so after 3 training steps the text barely moves
    the prediction (~1e-7) and guidance would be untestable; the jitter makes the output depend on the prompt.
    """
    model = LatentDiffusionModule.load_from_checkpoint(trained_ldm_ckpt, map_location="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for unet in (model.unet, model.ema.module):
            for p in unet.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def test_prompt_changes_the_prediction(model: LatentDiffusionModule):
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([500])
    with torch.no_grad():
        cond = model.sampling_unet(x, t, model.encode_prompts(PROMPTS[:1]))
        uncond = model.sampling_unet(x, t, model.unconditional_context())
    assert (cond - uncond).abs().max() > 1e-2


def test_images_in_range_and_seed_reproducible(model: LatentDiffusionModule):
    a = generate(model, PROMPTS, [5, 6, 7], **FAST)
    b = generate(model, PROMPTS, [5, 6, 7], **FAST)
    assert a.shape == (3, 1, 32, 32) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    c = generate(model, PROMPTS, [5, 6, 8], **FAST)
    assert torch.equal(a[:2], c[:2]) and not torch.allclose(a[2], c[2])


@pytest.mark.parametrize(
    ("sampler", "eta"),
    [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0), ("pndm", 0.0)],
    ids=["ddim", "ddim-eta1", "ddpm", "pndm"],
)
def test_image_alone_equals_image_in_a_batch(model: LatentDiffusionModule, sampler: str, eta: float):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ddpm with 3 of 1000 steps warns (tested below)
        batch = generate(model, PROMPTS, [10, 11, 12], sampler=sampler, eta=eta, **FAST)
        alone = generate(model, PROMPTS[1:2], [11], sampler=sampler, eta=eta, **FAST)
        split = generate(model, PROMPTS, [10, 11, 12], sampler=sampler, eta=eta, batch_size=2, **FAST)
    torch.testing.assert_close(alone[0], batch[1], rtol=0, atol=1e-4)
    torch.testing.assert_close(split, batch, rtol=0, atol=1e-4)
    assert not torch.allclose(batch[0], batch[1], atol=1e-2)


def test_stochastic_samplers_use_their_step_noise(model: LatentDiffusionModule):
    deterministic = generate(model, PROMPTS[:1], [3], sampler="ddim", **FAST)
    stochastic = generate(model, PROMPTS[:1], [3], sampler="ddim", eta=1.0, **FAST)
    assert not torch.allclose(deterministic, stochastic, atol=1e-3)


def test_guidance_zero_is_the_empty_prompt_sampled_conditionally(model: LatentDiffusionModule):
    """With s=0 only the unconditional branch counts; it must equal conditioning on "" (training's dropped text)."""
    uncond = generate(model, ["Large right pleural effusion."], [4], guidance_scale=0.0, **FAST)
    empty = generate(model, [""], [4], guidance_scale=1.0, **FAST)
    torch.testing.assert_close(uncond, empty, rtol=0, atol=1e-5)
    guided = generate(model, ["Large right pleural effusion."], [4], guidance_scale=7.0, **FAST)
    assert not torch.allclose(guided, uncond, atol=1e-3)


def test_sampling_uses_the_ema_weights(model: LatentDiffusionModule):
    model = copy.deepcopy(model)
    with_ema = generate(model, PROMPTS[:2], [1, 2], **FAST)
    ema_weights = copy.deepcopy(model.ema.module.state_dict())
    model.ema = None
    online = generate(model, PROMPTS[:2], [1, 2], **FAST)
    assert not torch.allclose(
        with_ema, online, atol=1e-4
    )  # the EMA and the online UNet differ after training
    model.unet.load_state_dict(ema_weights)
    torch.testing.assert_close(generate(model, PROMPTS[:2], [1, 2], **FAST), with_ema, rtol=0, atol=0)


def test_restores_train_mode_and_checks_arguments(model: LatentDiffusionModule):
    model.train()
    generate(model, PROMPTS[:1], [0], num_inference_steps=1, progress=False)
    assert model.training and model.unet.training and not model.autoencoder.training
    model.eval()
    generate(model, PROMPTS[:1], [0], num_inference_steps=1, progress=False)
    assert not model.training
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate(model, PROMPTS, [0], **FAST)
    with pytest.raises(ValueError, match="unknown sampler"):
        generate(model, PROMPTS[:1], [0], sampler="euler", **FAST)
    with pytest.warns(UserWarning, match="DDPMScheduler"):
        generate(model, PROMPTS[:1], [0], sampler="ddpm", num_inference_steps=2, progress=False)


def test_sampling_schedulers_share_the_training_schedule(model: LatentDiffusionModule):
    for sampler in ("ddim", "ddpm", "pndm"):
        scheduler = make_sampling_scheduler(model.hparams.scheduler, sampler)
        assert torch.equal(scheduler.betas, model.noise_scheduler.betas)
        assert scheduler.prediction_type == "v_prediction"

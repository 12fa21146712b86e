"""The one sampling routine: training callback, sample command and evaluation all call ``generate``.

Classifier-free guidance runs the unconditional and conditional halves in one batched UNet call; the
unconditional half is ``model.unconditional_context()``, the empty-prompt embedding the model was trained with.
Every image has its own seed and random generator, so any image can be regenerated alone: its initial noise
(and, for stochastic samplers, its per-step noise) does not depend on the other images in the batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from cxr_ldm.models.diffusion import LatentDiffusionModule

SAMPLERS = ("ddim", "ddpm", "pndm")


def make_sampling_scheduler(train_scheduler: dict[str, Any], sampler: str = "ddim"):
    """A MONAI inference scheduler with the training schedule's betas and prediction type.

    Predicted x0 is not clipped: latents are not bounded to [-1, 1] the way pixel images are.
    """
    common = {
        "num_train_timesteps": train_scheduler["num_train_timesteps"],
        "schedule": train_scheduler["schedule"],
        "prediction_type": train_scheduler["prediction_type"],
    }
    schedule_args = {
        k: v for k, v in train_scheduler.items() if k not in common and k not in _NON_SCHEDULE_ARGS
    }
    if sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=False, **schedule_args)
    if sampler == "ddpm":
        return DDPMScheduler(**common, clip_sample=False, **schedule_args)
    if sampler == "pndm":
        return PNDMScheduler(**common, skip_prk_steps=True, **schedule_args)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")


# DDPMScheduler options of the training config that are not arguments of the noise-schedule function.
_NON_SCHEDULE_ARGS = ("variance_type", "clip_sample", "clip_sample_min", "clip_sample_max")


def _device_generator(cpu_generator: torch.Generator, device: torch.device) -> torch.Generator:
    """Per-step noise generator of one image: on the sampling device, seeded from the image's own stream."""
    step_seed = int(torch.randint(0, 2**62, (1,), generator=cpu_generator))
    return torch.Generator(device=device).manual_seed(step_seed)


@torch.no_grad()
def _sample_batch(
    model: LatentDiffusionModule,
    prompts: Sequence[str],
    seeds: Sequence[int],
    guidance_scale: float,
    num_inference_steps: int,
    sampler: str,
    eta: float,
    progress_bar: tqdm,
) -> torch.Tensor:
    device = model.device
    unet = model.sampling_unet
    scheduler = make_sampling_scheduler(model.hparams.scheduler, sampler)
    scheduler.set_timesteps(num_inference_steps, device=device)

    # Initial noise from a CPU generator per image: the same seed starts from the same latent on any device.
    cpu_gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    latents = torch.stack([torch.randn(model.latent_shape, generator=g) for g in cpu_gens]).to(device)
    step_gens = [_device_generator(g, device) for g in cpu_gens]

    cond = model.encode_prompts(prompts)
    uncond = model.unconditional_context().expand_as(cond)
    context = torch.cat([uncond, cond])
    n = len(prompts)
    for t in scheduler.timesteps:
        model_in = torch.cat([latents, latents])
        timesteps = torch.full((2 * n,), int(t), device=device, dtype=torch.long)
        out_uncond, out_cond = unet(model_in, timesteps=timesteps, context=context).chunk(2)
        prediction = out_uncond + guidance_scale * (out_cond - out_uncond)
        if sampler == "ddpm" or (sampler == "ddim" and eta > 0):
            # One step per image so that each draws its noise from its own generator.
            extra = {"eta": eta} if sampler == "ddim" else {}
            steps = [
                scheduler.step(
                    prediction[i : i + 1], int(t), latents[i : i + 1], generator=step_gens[i], **extra
                )
                for i in range(n)
            ]
            latents = torch.cat([s[0] for s in steps])
        else:
            latents = scheduler.step(prediction, int(t), latents)[0]
        progress_bar.update(1)
    return model.decode_latents(latents).float().cpu()


def generate(
    model: LatentDiffusionModule,
    prompts: Sequence[str],
    seeds: Sequence[int],
    guidance_scale: float = 7.0,
    num_inference_steps: int = 50,
    sampler: str = "ddim",
    batch_size: int = 8,
    progress: bool = True,
    eta: float = 0.0,
) -> torch.Tensor:
    """Images ``[N, 1, H, W]`` in 0..1 (float32, on the CPU) for ``prompts[i]`` with ``seeds[i]``.

    Uses the model's EMA UNet when it has one; runs in eval mode on the model's device without gradients and
    restores the previous train/eval mode. ``sampler`` is ``ddim`` (deterministic, default), ``ddpm``
    (stochastic; only valid with all training steps, see the warning) or ``pndm`` (PLMS, deterministic).
    ``eta`` > 0 makes DDIM stochastic (1 is DDPM-like ancestral sampling on a short schedule).
    Guidance: ``uncond + guidance_scale * (cond - uncond)``; 1 is plain conditional sampling.
    """
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    if len(prompts) != len(seeds):
        raise ValueError(f"one seed per prompt needed: {len(prompts)} prompts, {len(seeds)} seeds")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if num_inference_steps < 1 or batch_size < 1:
        raise ValueError("num_inference_steps and batch_size must be >= 1")
    if not prompts:
        raise ValueError("no prompts to sample")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    train_steps = model.hparams.scheduler["num_train_timesteps"]
    if sampler == "ddpm" and num_inference_steps < train_steps:
        warnings.warn(
            f"sampler=ddpm with {num_inference_steps} < {train_steps} steps: MONAI's DDPMScheduler always steps "
            "t -> t-1, so a shortened chain is not a valid DDPM sampler. Use all training steps, or sampler=ddim "
            "(with eta=1 for a stochastic sampler).",
            stacklevel=2,
        )

    was_training = model.training
    model.eval()
    try:
        batches = [range(i, min(i + batch_size, len(prompts))) for i in range(0, len(prompts), batch_size)]
        probe = make_sampling_scheduler(model.hparams.scheduler, sampler)
        probe.set_timesteps(num_inference_steps)
        total = len(batches) * len(probe.timesteps)
        images = []
        with tqdm(total=total, desc=f"sampling ({sampler})", unit="step", disable=not progress) as bar:
            for idx in batches:
                images.append(
                    _sample_batch(
                        model,
                        [prompts[i] for i in idx],
                        [seeds[i] for i in idx],
                        guidance_scale,
                        num_inference_steps,
                        sampler,
                        eta,
                        bar,
                    )
                )
        return torch.cat(images)
    finally:
        model.train(was_training)

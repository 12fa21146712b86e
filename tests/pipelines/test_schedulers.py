"""Samplers: DDIM consistent with its own timesteps (vs an independent loop and vs MONAI), MONAI 1.4's leading
spacing, diffusers' schedule equal to MONAI's, PLMS's repeated step, DDPM on a shortened chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from cxr_ldm.pipelines.schedulers import SAMPLERS, DDIMSampler, ddim_timesteps, make_sampler, training_betas

pytest_plugins = ["ldm_fixtures"]

SCHEDULE = {"num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "beta_start": 0.0015,
            "beta_end": 0.0205, "prediction_type": "v_prediction"}  # fmt: skip


def toy_model(x: torch.Tensor, t: int) -> torch.Tensor:
    """A fixed, smooth v-prediction that depends on the timestep, so wrong alphas change the result."""
    return 0.3 * x * (t / 1000.0) + 0.1 * torch.sin(x)


def independent_ddim(x: torch.Tensor, timesteps: list[int], alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """DDIM (eta 0, v-prediction) written out: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps."""
    x = x.double()
    for i, t in enumerate(timesteps):
        a = alphas_cumprod[t].double()
        a_prev = alphas_cumprod[timesteps[i + 1]].double() if i + 1 < len(timesteps) else torch.tensor(1.0).double()
        v = toy_model(x.float(), t).double()
        x0 = a.sqrt() * x - (1 - a).sqrt() * v
        eps = a.sqrt() * v + (1 - a).sqrt() * x
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x.float()


def run(sampler, x: torch.Tensor) -> torch.Tensor:
    for i, t in enumerate(sampler.timesteps):
        x = sampler.step(toy_model(sampler.scale_model_input(x, t), int(t)), i, x)
    return x


def monai_alphas() -> torch.Tensor:
    return DDPMScheduler(**{k: v for k, v in SCHEDULE.items()}).alphas_cumprod


@pytest.mark.parametrize("steps", [8, 50])
def test_ddim_equals_an_independent_ddim_and_monai_16_does_not(steps: int):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = DDIMSampler(SCHEDULE, steps, spacing="linspace")
    expected_steps = torch.linspace(999, 0, steps).round().long().tolist()  # MONAI 1.6's own spacing
    assert ours.timesteps == expected_steps
    torch.testing.assert_close(run(ours, x), independent_ddim(x, expected_steps, monai_alphas()), rtol=0, atol=1e-5)

    monai = DDIMScheduler(**SCHEDULE, clip_sample=False)
    monai.set_timesteps(steps)
    assert monai.timesteps.tolist() == expected_steps
    y = x
    for t in monai.timesteps:
        y, _ = monai.step(toy_model(y, int(t)), int(t), y)
    # MONAI 1.6 steps by the stride 1000 // N, not to the next timestep of its own list: a different result
    assert (y - run(ours, x)).abs().max() > 1e-2


def test_leading_spacing_is_monai_14s_ddim():
    """MONAI 1.4 (the released bundle): arange(N) * (1000 // N) reversed, previous timestep t - stride."""
    assert ddim_timesteps(50, 1000, "leading")[:3] == [980, 960, 940] and ddim_timesteps(50, 1000, "leading")[-1] == 0
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = DDIMSampler(SCHEDULE, 50, spacing="leading")
    alphas = monai_alphas()
    y = x.double()
    for t in range(980, -1, -20):  # the MONAI 1.4 loop, written out
        a, a_prev = alphas[t].double(), (alphas[t - 20].double() if t - 20 >= 0 else torch.tensor(1.0).double())
        v = toy_model(y.float(), t).double()
        x0, eps = a.sqrt() * y - (1 - a).sqrt() * v, a.sqrt() * v + (1 - a).sqrt() * y
        y = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(run(ours, x), y.float(), rtol=0, atol=1e-5)
    assert ddim_timesteps(4, 1000, "trailing") == [999, 749, 499, 249]


def test_diffusers_scaled_linear_equals_monais_schedule():
    """diffusers' own "scaled_linear" betas equal MONAI's scaled_linear_beta, so its solvers see our schedule."""
    from diffusers import DPMSolverMultistepScheduler

    theirs = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0205,
                                         beta_schedule="scaled_linear")  # fmt: skip
    monai = DDPMScheduler(**SCHEDULE)
    torch.testing.assert_close(theirs.betas.float(), monai.betas.float(), rtol=0, atol=1e-8)
    torch.testing.assert_close(theirs.alphas_cumprod.float(), monai.alphas_cumprod.float(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(training_betas(SCHEDULE), monai.betas)
    for name in ("dpm++2m", "unipc", "euler", "pndm", "ddpm"):
        sampler = make_sampler(name, SCHEDULE, 10)
        np.testing.assert_allclose(sampler.scheduler.alphas_cumprod.numpy(), monai.alphas_cumprod.numpy(), rtol=1e-6)
        assert sampler.scheduler.config.prediction_type == "v_prediction"


def test_plms_keeps_its_repeated_timestep():
    """PLMS (PNDM without Runge-Kutta warm-up) evaluates the second timestep twice; MONAI's skip_prk_steps drops it."""
    timesteps = [int(t) for t in make_sampler("pndm", SCHEDULE, 10).timesteps]
    assert len(timesteps) == 11 and timesteps[1] == timesteps[2] and timesteps[0] > timesteps[1]


def test_ddpm_on_a_shortened_chain_steps_to_the_next_timestep():
    sampler = make_sampler("ddpm", SCHEDULE, 10)
    timesteps = [int(t) for t in sampler.timesteps]
    assert timesteps == np.linspace(0, 999, 10).round()[::-1].astype(int).tolist()  # 999, 888, ..., 0
    assert [int(sampler.scheduler.previous_timestep(t)) for t in timesteps[:-1]] == timesteps[1:]


def test_multistep_solvers_at_20_steps_approach_ddim_at_250():
    """On the smooth toy model, DPM-Solver++(2M) and UniPC at 20 steps land nearer to DDIM-250 than DDIM-20."""
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    reference = run(DDIMSampler(SCHEDULE, 250), x)
    ddim20 = (run(DDIMSampler(SCHEDULE, 20), x) - reference).abs().mean()
    for name in ("dpm++2m", "unipc"):
        assert (run(make_sampler(name, SCHEDULE, 20), x) - reference).abs().mean() < ddim20, name


def test_unknown_names_and_bad_values():
    with pytest.raises(ValueError, match="unknown sampler 'heun'; choose one of ddim, dpm"):
        make_sampler("heun", SCHEDULE, 10)
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        make_sampler("ddim", SCHEDULE, 10, spacing="cosine")
    with pytest.raises(ValueError, match="num_inference_steps must be in 1..1000"):
        make_sampler("ddim", SCHEDULE, 0)
    assert SAMPLERS[0] == "ddim"

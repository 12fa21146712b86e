"""Samplers for the pipeline: a DDIM that is consistent with its own timesteps, and diffusers' solvers.

* ``ddim``: MONAI 1.6's ``DDIMScheduler`` spaces timesteps with ``linspace(999, 0, N)`` but its ``step()`` takes
  the previous timestep as ``t - 1000 // N``, so every step reads the wrong previous alpha. ``DDIMSampler`` takes
  the previous timestep from the schedule itself. ``timestep_spacing="leading"`` reproduces MONAI 1.4's DDIM
  exactly (``arange(N) * (1000 // N)`` reversed: 980, 960, ..., 0 for 50 steps), which the released bundle used.
* ``dpm++2m``, ``unipc``, ``euler``, ``pndm``, ``ddpm``: diffusers' schedulers built with the model's own betas
  (``trained_betas`` = MONAI's schedule, so both libraries use the same numbers). diffusers' PNDM keeps the
  repeated timestep of PLMS that MONAI's ``skip_prk_steps`` drops; diffusers' DDPM steps to the schedule's
  previous timestep, so a shortened chain is a valid ancestral sampler (MONAI's always steps ``t -> t - 1``).

Every sampler gets one ``step`` call per image when it draws noise, so each image's noise comes from its own
generator and an image can be regenerated alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.schedulers import DDPMScheduler as MonaiDDPMScheduler

SAMPLERS = ("ddim", "dpm++2m", "unipc", "euler", "pndm", "ddpm")
SPACINGS = ("linspace", "leading", "trailing")
_DIFFUSERS = {
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "ddpm": ("DDPMScheduler", {"variance_type": "fixed_small", "clip_sample": False}),
}
STOCHASTIC = frozenset({"ddpm"})


def training_betas(schedule: dict[str, Any]) -> torch.Tensor:
    """The betas the model was trained with, from MONAI's own schedule functions (float32, as MONAI keeps them)."""
    kwargs = {k: v for k, v in schedule.items() if k not in ("prediction_type",)}
    return MonaiDDPMScheduler(**kwargs).betas


def ddim_timesteps(num_inference_steps: int, num_train_timesteps: int, spacing: str) -> list[int]:
    """Decreasing timesteps; ``linspace`` as MONAI 1.6, ``leading`` as MONAI 1.4, ``trailing`` as diffusers."""
    n, total = int(num_inference_steps), int(num_train_timesteps)
    if not 1 <= n <= total:
        raise ValueError(f"num_inference_steps must be in 1..{total}, got {n}")
    if spacing == "linspace":
        steps = torch.linspace(total - 1, 0, n).round().long().tolist()
    elif spacing == "leading":
        stride = total // n
        steps = [k * stride for k in range(n)][::-1]
    elif spacing == "trailing":
        steps = [round(total - k * total / n) - 1 for k in range(n)]
    else:
        raise ValueError(f"timestep_spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    return [int(t) for t in steps]


class DDIMSampler:
    """DDIM (Song et al. 2021, eq. 12) whose previous timestep is the next entry of its own timestep list."""

    init_noise_sigma = 1.0

    def __init__(self, schedule: dict[str, Any], num_inference_steps: int, spacing: str = "linspace", eta: float = 0.0):
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.prediction_type = schedule["prediction_type"]
        if self.prediction_type not in ("v_prediction", "epsilon", "sample"):
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")
        self.alphas_cumprod = torch.cumprod(1.0 - training_betas(schedule), dim=0)
        self.timesteps = ddim_timesteps(num_inference_steps, schedule["num_train_timesteps"], spacing)
        self.eta = float(eta)
        self.stochastic = self.eta > 0

    def scale_model_input(self, sample: torch.Tensor, timestep: int) -> torch.Tensor:
        return sample

    def _alphas(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        a_t = self.alphas_cumprod[self.timesteps[index]]
        a_prev = (
            self.alphas_cumprod[self.timesteps[index + 1]] if index + 1 < len(self.timesteps) else torch.tensor(1.0)
        )
        return a_t.double(), a_prev.double()

    def step(
        self, output: torch.Tensor, index: int, sample: torch.Tensor, generators: Sequence[torch.Generator] = ()
    ) -> torch.Tensor:
        a_t, a_prev = self._alphas(index)
        x, out = sample.double(), output.double()
        if self.prediction_type == "v_prediction":
            x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * out
            eps = a_t.sqrt() * out + (1 - a_t).sqrt() * x
        elif self.prediction_type == "epsilon":
            x0, eps = (x - (1 - a_t).sqrt() * out) / a_t.sqrt(), out
        else:
            x0, eps = out, (x - a_t.sqrt() * out) / (1 - a_t).sqrt()
        sigma = self.eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        prev = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        if self.stochastic and float(sigma) > 0:
            noise = torch.stack([torch.randn(sample.shape[1:], generator=g) for g in generators]).to(prev)
            prev = prev + sigma * noise
        return prev.to(sample.dtype)


class DiffusersSampler:
    """A diffusers scheduler behind the same three calls; stochastic ones step image by image."""

    def __init__(self, name: str, schedule: dict[str, Any], num_inference_steps: int, spacing: str = "linspace"):
        import diffusers

        class_name, options = _DIFFUSERS[name]
        cls = getattr(diffusers, class_name)
        kwargs: dict[str, Any] = {
            "num_train_timesteps": int(schedule["num_train_timesteps"]),
            "trained_betas": training_betas(schedule).double().numpy(),
            "prediction_type": schedule["prediction_type"],
            "timestep_spacing": spacing,
            **options,
        }
        if name in ("dpm++2m", "unipc"):
            kwargs["final_sigmas_type"] = "zero"  # end on the clean latent, as DDIM does
        with warnings.catch_warnings():
            # diffusers calls np.array() on a torch tensor (a NumPy 2 DeprecationWarning no user can act on)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="diffusers")
            self.scheduler = cls(**kwargs)
            self.scheduler.set_timesteps(int(num_inference_steps))
        self.timesteps = list(self.scheduler.timesteps)
        self.init_noise_sigma = float(self.scheduler.init_noise_sigma)
        self.stochastic = name in STOCHASTIC

    def scale_model_input(self, sample: torch.Tensor, timestep: Any) -> torch.Tensor:
        return self.scheduler.scale_model_input(sample, timestep)

    def step(
        self, output: torch.Tensor, index: int, sample: torch.Tensor, generators: Sequence[torch.Generator] = ()
    ) -> torch.Tensor:
        t = self.timesteps[index]
        if not self.stochastic:
            return self.scheduler.step(output, t, sample).prev_sample
        # DDPM is stateless between images: one call per image with that image's generator
        return torch.cat(
            [
                self.scheduler.step(output[i : i + 1], t, sample[i : i + 1], generator=g).prev_sample
                for i, g in enumerate(generators)
            ]
        )


def make_sampler(
    name: str, schedule: dict[str, Any], num_inference_steps: int, spacing: str = "linspace", eta: float = 0.0
) -> DDIMSampler | DiffusersSampler:
    """The sampler ``name`` (one of ``SAMPLERS``) for a model trained with ``schedule``."""
    if name == "ddim":
        return DDIMSampler(schedule, num_inference_steps, spacing, eta)
    if name not in _DIFFUSERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if eta:
        raise ValueError(f"eta applies to sampler=ddim only (got sampler={name}, eta={eta})")
    if spacing not in SPACINGS:
        raise ValueError(f"timestep_spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    return DiffusersSampler(name, schedule, num_inference_steps, spacing)

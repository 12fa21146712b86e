"""The sampling knobs (``conf/sampling``), checked once for every command and callback that samples."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cxr_ldm.pipelines.schedulers import SAMPLERS

KEYS = ("sampler", "steps", "guidance_scale", "eta", "batch_size", "seed")


class SamplingConfigError(ValueError):
    """A wrong ``sampling.*`` value; the message names the option and what it accepts."""


def check_steps_for(pipe: Any, steps: int, option: str) -> None:
    """No more sampling steps than the model's noise schedule has timesteps; ``option`` is the name the user
    set (``sampling.steps`` for sample and evaluate, ``max_steps`` for the app)."""
    limit = int(pipe.schedule["num_train_timesteps"])
    if steps > limit:
        raise SamplingConfigError(
            f"{option}={steps} is more than the model's {limit} diffusion timesteps: use at most {limit}"
        )


@dataclass(frozen=True)
class SamplingSettings:
    """``None`` means the model's own default (``pipe.default_sampler`` and so on)."""

    sampler: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    eta: float = 0.0
    batch_size: int = 8
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, prefix: str = "sampling") -> SamplingSettings:
        """From a ``sampling`` mapping; keys other than ``KEYS`` (e.g. evaluation's ``n``) are ignored."""
        cfg = dict(cfg or {})

        def number(key: str, kind: type, minimum: float | None = None, default: Any = None) -> Any:
            value = cfg.get(key, default)
            if value is None:
                return None
            try:
                if kind is int and float(value) != int(float(value)):
                    raise ValueError
                value = kind(value)
            except (TypeError, ValueError) as err:
                raise SamplingConfigError(f"{prefix}.{key}={cfg.get(key)!r} must be a {kind.__name__}") from err
            if minimum is not None and value < minimum:
                raise SamplingConfigError(f"{prefix}.{key}={value} must be >= {minimum}")
            return value

        sampler = cfg.get("sampler")
        if sampler is not None and str(sampler) not in SAMPLERS:
            raise SamplingConfigError(f"{prefix}.sampler={sampler!r} is not one of {', '.join(SAMPLERS)}")
        settings = cls(
            sampler=None if sampler is None else str(sampler),
            steps=number("steps", int, 1),
            guidance_scale=number("guidance_scale", float),
            eta=number("eta", float, 0.0, 0.0),
            batch_size=number("batch_size", int, 1, 8),
            seed=number("seed", int, None, 0),
        )
        guidance = settings.guidance_scale
        if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
            raise SamplingConfigError(
                f"{prefix}.guidance_scale={guidance} must be a finite number >= 0 (1 = no guidance; the models here "
                "use 7)"
            )
        if settings.eta and settings.sampler not in (None, "ddim"):
            raise SamplingConfigError(f"{prefix}.eta applies to sampler=ddim only (got sampler={settings.sampler})")
        return settings

    def check_for(self, pipe: Any, prefix: str = "sampling") -> None:
        """What only the loaded model can tell: no more steps than its noise schedule has timesteps."""
        if self.steps is not None:
            check_steps_for(pipe, self.steps, f"{prefix}.steps")

    def call_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``CXRLDMPipeline.__call__``."""
        return {
            "sampler": self.sampler,
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "eta": self.eta,
            "batch_size": self.batch_size,
        }

    def resolved(self, pipe: Any) -> dict[str, Any]:
        """The settings a pipeline really uses (defaults filled in): what a samples manifest records."""
        return {
            "sampler": self.sampler or pipe.default_sampler,
            "steps": int(self.steps or pipe.default_num_inference_steps),
            "guidance_scale": float(pipe.default_guidance_scale if self.guidance_scale is None else self.guidance_scale),
            "eta": float(self.eta),
            "timestep_spacing": pipe.timestep_spacing,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

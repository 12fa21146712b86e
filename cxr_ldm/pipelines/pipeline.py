"""``CXRLDMPipeline``: report text in, chest X-rays out, for trained, exported and released models.

    pipe = CXRLDMPipeline.load("ldm.ckpt")          # or an exported folder, or the MONAI bundle
    images = pipe(["Large right pleural effusion."], seeds=[0], output_type="pil")

The one sampling loop of the project lives here: the sample command, evaluation, the demo and the training
callbacks all call a pipeline (the callbacks build theirs from the module being trained, sharing its networks).
Classifier-free guidance runs the unconditional and conditional halves in one batched UNet call; the
unconditional half is the empty prompt's embedding, exactly what guidance dropout trained on. Every image has
its own seed: its initial noise is drawn on the CPU from ``torch.Generator().manual_seed(seed)`` (the same on any
device), and stochastic samplers draw its per-step noise from a generator seeded from the same stream, so an
image does not depend on the others in its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cxr_ldm.data.tokenization import tokenize
from cxr_ldm.models.components import LDMComponents, ModelLoadError, read_ldm_checkpoint
from cxr_ldm.models.exported import read_exported, write_exported
from cxr_ldm.models.loading import existing_path, read_components
from cxr_ldm.models.monai_bundle import SD21_TEXT_ENCODER_HINT, read_monai_bundle
from cxr_ldm.pipelines.prompts import over_length
from cxr_ldm.pipelines.schedulers import SAMPLERS, make_sampler

# Defaults of models this project trains: the fastest sampler that matched DDIM-50 on the demo model was DDIM-50
# itself (DPM-Solver++ and UniPC at 20 steps keep the adherence but sit farther from DDIM-250; docs/sampling.md).
PROJECT_DEFAULTS = {"sampler": "ddim", "num_inference_steps": 50, "guidance_scale": 7.0, "timestep_spacing": "linspace"}
OUTPUT_TYPES = ("pt", "np", "pil")


class CXRLDMPipeline:
    """Sampling from components: autoencoder, UNet, text encoder, noise schedule, scale factor, latent shape."""

    def __init__(self, components: LDMComponents) -> None:
        if components.text_encoder is None:
            raise ModelLoadError(f"the model has no text encoder: give {SD21_TEXT_ENCODER_HINT}")
        self.components = components
        # the networks may be a training module's own (from_module): sampling never changes their grad flags
        self.autoencoder = components.autoencoder
        self.unet = components.unet
        self.text_encoder = components.text_encoder
        self.schedule = dict(components.schedule)
        self.scale_factor = float(components.scale_factor)
        self.latent_shape = tuple(int(s) for s in components.latent_shape)
        defaults = {**PROJECT_DEFAULTS, **components.defaults}
        self.default_sampler: str = defaults["sampler"]
        self.default_num_inference_steps: int = int(defaults["num_inference_steps"])
        self.default_guidance_scale: float = float(defaults["guidance_scale"])
        self.timestep_spacing: str = defaults["timestep_spacing"]
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._uncond: torch.Tensor | None = None

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, path: str | Path) -> CXRLDMPipeline:
        """A stage-2 ``ldm.ckpt`` of this project (its EMA UNet when it has one)."""
        return cls(read_ldm_checkpoint(existing_path(path, "checkpoint"), "checkpoint"))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> CXRLDMPipeline:
        """A folder written by ``save_pretrained`` / ``python -m cxr_ldm.export`` (JSON and safetensors only)."""
        return cls(read_exported(existing_path(folder, "exported folder")))

    @classmethod
    def from_monai_bundle(cls, bundle_dir: str | Path, text_encoder: str | Path | None = None) -> CXRLDMPipeline:
        """The MONAI model zoo's ``cxr_image_synthesis_latent_diffusion_model`` with SD 2.1's text encoder."""
        if text_encoder is None:
            raise ModelLoadError(f"the MONAI bundle needs its text encoder: give {SD21_TEXT_ENCODER_HINT}")
        return cls(read_monai_bundle(existing_path(bundle_dir, "MONAI bundle"), text_encoder))

    @classmethod
    def load(cls, path: str | Path, text_encoder: str | Path | None = None, option: str = "model") -> CXRLDMPipeline:
        """Whatever ``path`` holds: a ``.ckpt`` file, an exported folder or a MONAI bundle (for the CLIs, whose
        errors name ``option``, the option that gave ``path``)."""
        return cls(read_components(path, text_encoder, option=option))

    @classmethod
    def from_module(cls, module: Any) -> CXRLDMPipeline:
        """A pipeline over a ``LatentDiffusionModule``'s own networks (shared, not copied): for callbacks."""
        pipe = cls(module.components())
        return pipe.to(module.device)

    def save_pretrained(self, out_dir: str | Path, model_card: str = "", overwrite: bool = False) -> Path:
        """Write the exported folder (see ``cxr_ldm.models.exported``); the sampling defaults go with it."""
        components = self.components
        components.defaults = {
            "sampler": self.default_sampler,
            "num_inference_steps": self.default_num_inference_steps,
            "guidance_scale": self.default_guidance_scale,
            "timestep_spacing": self.timestep_spacing,
        }
        return write_exported(components, out_dir, model_card or "# cxr-ldm model\n", overwrite=overwrite)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> CXRLDMPipeline:
        """Move the networks (and cast the UNet and autoencoder to ``dtype``; the text encoder stays float32)."""
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        self.autoencoder.to(self.device, self.dtype)
        self.unet.to(self.device, self.dtype)
        self.text_encoder.to(self.device)
        self._uncond = None
        return self

    # ------------------------------------------------------------------------------------------ text
    @property
    def context_length(self) -> int:
        return self.text_encoder.context_length

    def prompt_problems(self, prompts: Sequence[str]) -> list[str]:
        """Why prompts cannot be used as given (empty, over the context length): for CLIs and the app."""
        problems = {i: f"prompt {i} is empty" for i, prompt in enumerate(prompts) if not str(prompt).strip()}
        for i, n in over_length(prompts, self.context_length):
            problems[i] = f"prompt {i} has {n} tokens, over the {self.context_length} the text encoder reads"
        return [problems[i] for i in sorted(problems)]

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Cross-attention context ``[N, 77, width]`` (tokenized by the project's one tokenizer)."""
        tokens = tokenize(list(prompts), context_length=self.context_length).to(self.device)
        return self.text_encoder(tokens).to(self.dtype)

    def unconditional_context(self) -> torch.Tensor:
        if self._uncond is None:
            self._uncond = self.encode_prompts([""])
        return self._uncond

    # ------------------------------------------------------------------------------------------ sampling
    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """``[N, C, h, w]`` unit noise, image ``i`` from ``torch.Generator().manual_seed(seeds[i])`` on the CPU."""
        return torch.stack([torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in 0..1 (clipped, float32) from scaled latents."""
        images = self.autoencoder.decode(latents.to(self.dtype) / self.scale_factor)
        return images.float().clamp(0.0, 1.0)

    @torch.no_grad()
    def _sample_batch(
        self,
        prompts: list[str],
        noise: torch.Tensor,
        step_seeds: list[int],
        guidance_scale: float,
        steps: int,
        sampler_name: str,
        eta: float,
        bar: tqdm,
    ) -> torch.Tensor:
        sampler = make_sampler(sampler_name, self.schedule, steps, self.timestep_spacing, eta)
        latents = noise.to(self.device, torch.float32) * sampler.init_noise_sigma
        generators = [torch.Generator().manual_seed(s) for s in step_seeds]
        cond = self.encode_prompts(prompts)
        context = torch.cat([self.unconditional_context().expand_as(cond), cond])
        n = len(prompts)
        for index, t in enumerate(sampler.timesteps):
            model_in = sampler.scale_model_input(latents, t).to(self.dtype)
            timesteps = torch.full((2 * n,), float(t), device=self.device)
            if float(t) == int(float(t)):
                timesteps = timesteps.long()
            out_uncond, out_cond = self.unet(torch.cat([model_in, model_in]), timesteps=timesteps, context=context).float().chunk(2)
            prediction = out_uncond + guidance_scale * (out_cond - out_uncond)
            latents = sampler.step(prediction, index, latents, generators)
            bar.update(1)
        return self.decode(latents).cpu()

    def __call__(
        self,
        prompts: str | Sequence[str],
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seeds: Sequence[int] | None = None,
        latents: torch.Tensor | None = None,
        sampler: str | None = None,
        batch_size: int = 8,
        output_type: str = "pt",
        progress: bool = True,
        eta: float = 0.0,
    ) -> torch.Tensor | np.ndarray | list:
        """Images for ``prompts``: ``"pt"`` ``[N, 1, H, W]`` float in 0..1 on the CPU, ``"np"`` the same as a
        float32 array, ``"pil"`` 8-bit grayscale images. ``None`` takes the pipeline's defaults; ``latents`` are
        the initial noise ``[N, C, h, w]`` (unscaled) and override ``seeds`` (default ``0..N-1``)."""
        prompts = [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]
        if not prompts:
            raise ValueError("no prompts to sample")
        steps = int(self.default_num_inference_steps if num_inference_steps is None else num_inference_steps)
        scale = float(self.default_guidance_scale if guidance_scale is None else guidance_scale)
        sampler = self.default_sampler if sampler is None else str(sampler)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if steps < 1 or int(batch_size) < 1:
            raise ValueError(f"num_inference_steps and batch_size must be >= 1, got {steps} and {batch_size}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        seeds = list(range(len(prompts))) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != len(prompts):
            raise ValueError(f"one seed per prompt needed: {len(prompts)} prompts, {len(seeds)} seeds")
        if latents is not None:
            noise = latents.detach().float().cpu()
            if tuple(noise.shape) != (len(prompts), *self.latent_shape):
                raise ValueError(f"latents must be {[len(prompts), *self.latent_shape]}, got {list(noise.shape)}")
        else:
            noise = self.initial_noise(seeds)
        # per-step noise of stochastic samplers: a second stream of each image's own seed
        step_seeds = [int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(s + 2**40))) for s in seeds]

        probe = make_sampler(sampler, self.schedule, steps, self.timestep_spacing, eta)
        networks = (self.autoencoder, self.unet)
        modes = [net.training for net in networks]
        for net in networks:
            net.eval()
        try:
            result = self._sample_all(prompts, noise, step_seeds, scale, steps, sampler, eta, int(batch_size),
                                      len(probe.timesteps), progress)  # fmt: skip
        finally:
            for net, mode in zip(networks, modes, strict=True):
                net.train(mode)
        if output_type == "np":
            return result.numpy().astype(np.float32)
        if output_type == "pil":
            from PIL import Image

            arrays = (result[:, 0] * 255.0).round().to(torch.uint8).numpy()
            return [Image.fromarray(a, mode="L") for a in arrays]
        return result

    def _sample_all(
        self, prompts: list[str], noise: torch.Tensor, step_seeds: list[int], scale: float, steps: int,
        sampler: str, eta: float, bsz: int, steps_per_batch: int, progress: bool,
    ) -> torch.Tensor:  # fmt: skip
        chunks = [range(i, min(i + bsz, len(prompts))) for i in range(0, len(prompts), bsz)]
        images = []
        with tqdm(total=len(chunks) * steps_per_batch, desc=f"sampling ({sampler}, {steps} steps)", unit="step",
                  disable=not progress) as bar:  # fmt: skip
            for idx in chunks:
                images.append(
                    self._sample_batch(
                        [prompts[i] for i in idx], noise[idx.start : idx.stop], [step_seeds[i] for i in idx],
                        scale, steps, sampler, eta, bar,
                    )
                )  # fmt: skip
        return torch.cat(images)

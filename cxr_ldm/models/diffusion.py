"""Stage 2: text-conditioned latent diffusion on the frozen stage-1 autoencoder's latents.

What is trained is only MONAI's ``DiffusionModelUNet``. Around it:

* the stage-1 ``AutoencoderKL`` is read from ``autoencoder_ckpt`` once, frozen and kept as a submodule, so its
  weights are stored (once) in the LDM checkpoint and a trained ``ldm.ckpt`` is self-contained: its
  architecture goes into the hyper-parameters as ``autoencoder_arch`` and ``load_from_checkpoint(path)``
  rebuilds it without reading the stage-1 file again (it may have moved);
* the frozen text encoder (``text_encoder.py``); a pretrained one is not copied into the checkpoint but read
  again from its own file, a seeded random one is stored;
* latents are posterior samples times ``scale_factor``: a number (the published run used 0.3) or ``"auto"``,
  1/std of the latents over the first ``scale_factor_batches`` training batches, kept as a buffer afterwards;
* an EMA copy of the UNet (``ema_decay``; None switches it off) that sampling and export use.

The DataModule already replaced a share of the texts with the empty prompt (guidance dropout), so there is no
second dropout here; sampling's unconditional branch is ``text_encoder(tokenize([""]))``, the very embedding
those dropped samples were trained with (``unconditional_context``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler

from cxr_ldm.data.tokenization import tokenize
from cxr_ldm.models.components import SCHEDULE_KEYS, LDMComponents
from cxr_ldm.models.ema import EMA
from cxr_ldm.models.loading import read_components
from cxr_ldm.models.resume_hooks import ResumableFitHooks, epoch_mean
from cxr_ldm.models.speed import Speed, apply_speed, fused_factory, resolve_speed
from cxr_ldm.models.text_encoder import build_text_encoder
from cxr_ldm.utils.checkpoints import check_autoencoder_checkpoint
from cxr_ldm.utils.plain import to_plain

# Reference noise schedule (DESIGN.md): DDPM 1000 steps, scaled-linear betas 0.0015..0.0205, v-prediction.
DEFAULT_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "schedule": "scaled_linear_beta",
    "beta_start": 0.0015,
    "beta_end": 0.0205,
    "prediction_type": "v_prediction",
}
DEFAULT_OPTIMIZER: dict[str, Any] = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 2.5e-5}


def read_autoencoder_checkpoint(
    path: str | Path, option: str = "model.autoencoder_ckpt"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Architecture kwargs and ``AutoencoderKL`` weights from a stage-1 Lightning checkpoint; a file that is not
    one is a one-line error naming ``option`` (``utils/checkpoints.check_autoencoder_checkpoint``).

    Reads the file directly (hyper-parameter ``autoencoder`` and the ``autoencoder.*`` weights) instead of
    rebuilding the whole stage-1 module, which would also build its discriminator and perceptual network.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"stage-1 autoencoder checkpoint not found: autoencoder_ckpt={str(path)!r} (train stage 1 first, "
            "e.g. `python -m cxr_ldm.train experiment=aekl`, and point model.autoencoder_ckpt at its .ckpt)"
        )
    ckpt = check_autoencoder_checkpoint(path, option)
    weights = ckpt.get("state_dict", ckpt)
    state = {k[len("autoencoder.") :]: v for k, v in weights.items() if k.startswith("autoencoder.")}
    return to_plain(ckpt["hyper_parameters"]["autoencoder"]), state


class LatentDiffusionModule(ResumableFitHooks, LightningModule):
    """Text-to-latent diffusion with a frozen AE-KL and a frozen OpenCLIP text encoder.

    Args:
        unet: kwargs of MONAI ``DiffusionModelUNet`` (``with_conditioning`` true, ``cross_attention_dim`` =
            the text encoder's width, in/out channels = the AE's latent channels).
        text_encoder: config dict of ``FrozenOpenCLIPTextEncoder`` (``conf/text_encoder/*.yaml``).
        autoencoder_ckpt: stage-1 checkpoint (``AutoencoderKLModule``); read once at construction.
        scheduler: kwargs of MONAI ``DDPMScheduler`` (``num_train_timesteps``, ``schedule``, ``beta_start``,
            ``beta_end``, ``prediction_type`` in ``v_prediction``/``epsilon``); sampling derives its
            schedulers from the same values.
        optimizer: Hydra-style ``{"_target_": ..., "_partial_": true, lr: ...}`` called with the UNet's
            parameters (or a ``functools.partial``); AdamW 2.5e-5 by default.
        scale_factor: latent multiplier, a number or ``"auto"``.
        scale_factor_batches: training batches measured when ``scale_factor="auto"``.
        image_size: training image side (or ``[H, W]``); fixes the latent shape for sampling. When None the
            shape is taken from the first training batch.
        ema_decay: EMA decay of the UNet weights, None for no EMA; ``ema_warmup`` uses
            ``min(decay, (1 + n) / (10 + n))``.
        val_seed: seed of the fixed posterior noise, diffusion noise and timesteps of each validation batch
            (so ``val/loss`` is comparable between epochs).
        init_from: an exported folder or the MONAI bundle to fine-tune from: its autoencoder, UNet (architecture
            and weights), noise schedule and scale factor replace ``autoencoder_ckpt``, ``unet``, ``scheduler`` and
            ``scale_factor``; the text encoder stays as configured (it must be the one the model was trained with).
        autoencoder_arch: written by the module itself; when set the AE is built from it and its weights come
            from the LDM checkpoint instead of ``autoencoder_ckpt``. Do not set it by hand.
        speed: the fast-path switches (``models/speed.py``: tf32, sdpa, channels_last, fused_adam, frozen_bf16;
            each true, false or auto = on for CUDA devices), applied by ``configure_model`` when a Trainer runs.
        compile: ``torch.compile`` the UNet in place (true or a dict of compile arguments); keys keep their names.
    """

    def __init__(
        self,
        unet: Mapping[str, Any],
        text_encoder: Mapping[str, Any],
        autoencoder_ckpt: str | None = None,
        scheduler: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | Callable | None = None,
        scale_factor: float | str = 1.0,
        scale_factor_batches: int = 10,
        image_size: int | Sequence[int] | None = None,
        ema_decay: float | None = 0.9999,
        ema_warmup: bool = True,
        val_seed: int = 0,
        autoencoder_arch: Mapping[str, Any] | None = None,
        init_from: str | None = None,
        speed: Mapping[str, Any] | None = None,
        compile: bool | Mapping[str, Any] = False,
    ) -> None:
        super().__init__()
        self._optimizer_factory = optimizer if callable(optimizer) else None
        unet, text_encoder = to_plain(unet), to_plain(text_encoder)
        scheduler = {**DEFAULT_SCHEDULER, **to_plain(scheduler or {})}
        optimizer = to_plain(optimizer) if optimizer is not None else dict(DEFAULT_OPTIMIZER)
        image_size = to_plain(image_size)
        autoencoder_state = None
        unet_state = None
        if init_from is not None and autoencoder_arch is None:
            # fine-tuning: the folder's autoencoder, UNet (architecture and weights), schedule and scale factor
            start = read_components(init_from, need_text_encoder=False, option="model.init_from")
            autoencoder_arch, autoencoder_state = start.configs["autoencoder"], start.autoencoder.state_dict()
            unet, unet_state = dict(start.configs["unet"]), start.unet.state_dict()
            scheduler = {**scheduler, **start.schedule}
            scale_factor = start.scale_factor
        if autoencoder_arch is None:
            if autoencoder_ckpt is None:
                raise ValueError(
                    "LatentDiffusionModule needs the stage-1 checkpoint: set model.autoencoder_ckpt=AEKL.ckpt, "
                    "or model.init_from=DIR (an exported model or the MONAI bundle) to fine-tune from its weights"
                )
            autoencoder_arch, autoencoder_state = read_autoencoder_checkpoint(autoencoder_ckpt)
        autoencoder_arch = to_plain(autoencoder_arch)
        if isinstance(scale_factor, str) and scale_factor != "auto":
            raise ValueError(f"scale_factor must be a number or 'auto', got {scale_factor!r}")
        # save_hyperparameters reads the (now plain) local values of the arguments.
        self.save_hyperparameters()

        self.autoencoder = AutoencoderKL(**autoencoder_arch)
        if autoencoder_state is not None:
            self.autoencoder.load_state_dict(autoencoder_state)
        self.autoencoder.requires_grad_(False).eval()
        self._autoencoder_loaded = autoencoder_state is not None

        self.text_encoder = build_text_encoder(text_encoder)
        self._check_shapes(unet, autoencoder_arch)
        self.unet = DiffusionModelUNet(**unet)
        if unet_state is not None:
            self.unet.load_state_dict(unet_state)
        self.noise_scheduler = DDPMScheduler(**scheduler)
        self.ema = EMA(self.unet, ema_decay, ema_warmup) if ema_decay is not None else None

        self.auto_scale = scale_factor == "auto"
        initial = float("nan") if self.auto_scale else float(scale_factor)
        self.register_buffer("scale_factor", torch.tensor(initial, dtype=torch.float32))
        # count, sum and sum of E[z^2] of the posterior over the measured batches (float64: many elements)
        self.register_buffer("latent_moments", torch.zeros(3, dtype=torch.float64))
        self.register_buffer("scale_batches_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("latent_shape_buffer", torch.zeros(3, dtype=torch.long))
        if image_size is not None:
            self.latent_shape_buffer.copy_(torch.tensor(self._latent_shape_for(image_size)))
        self._latent_shape_checked = False
        self.train_epoch_means = torch.nn.ModuleDict({"loss": epoch_mean()})  # continued by a mid-epoch resume
        resolve_speed(speed, compile, torch.device("cpu"))  # a bad switch fails here, not when fitting starts
        self._speed: Speed | None = None

    # ----------------------------------------------------------------------------------------------- set-up
    def _check_shapes(self, unet: Mapping[str, Any], arch: Mapping[str, Any]) -> None:
        latent_channels = int(arch.get("latent_channels", 3))
        if unet.get("in_channels") != latent_channels or unet.get("out_channels") != latent_channels:
            raise ValueError(
                f"unet in/out_channels ({unet.get('in_channels')}, {unet.get('out_channels')}) must equal the "
                f"autoencoder's latent_channels ({latent_channels})"
            )
        if not unet.get("with_conditioning") or unet.get("cross_attention_dim") != self.text_encoder.width:
            raise ValueError(
                f"unet needs with_conditioning=true and cross_attention_dim={self.text_encoder.width} (the text "
                f"encoder's width), got {unet.get('with_conditioning')} / {unet.get('cross_attention_dim')}"
            )

    def _latent_shape_for(self, image_size: int | Sequence[int]) -> tuple[int, int, int]:
        hw = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
        factor = 2 ** (len(self.hparams.autoencoder_arch["channels"]) - 1)
        if any(s % factor for s in hw):
            raise ValueError(
                f"image_size {hw} is not divisible by the autoencoder's downsampling factor {factor}"
            )
        return (self.autoencoder.latent_channels, hw[0] // factor, hw[1] // factor)

    def _check_latent_shape(self, shape: tuple[int, ...]) -> None:
        """The first training batch fixes the latent shape (or must match ``image_size``)."""
        known = tuple(int(s) for s in self.latent_shape_buffer)
        if 0 in known:
            self.latent_shape_buffer.copy_(torch.tensor(shape))
        elif known != shape:
            raise ValueError(
                f"training latents have shape {shape} but image_size={self.hparams.image_size} implies {known}: "
                "set model.image_size to the data's image size"
            )
        self._latent_shape_checked = True

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent; from ``image_size`` or the first training batch."""
        shape = tuple(int(s) for s in self.latent_shape_buffer)
        if 0 in shape:
            raise RuntimeError("latent shape unknown: set model.image_size or train on at least one batch")
        return shape  # type: ignore[return-value]

    def components(self) -> LDMComponents:
        """This module's networks as pipeline components (shared, not copied): the EMA UNet when EMA is on."""
        self._require_autoencoder()
        self._require_scale_factor()
        return LDMComponents(
            autoencoder=self.autoencoder,
            unet=self.sampling_unet,
            text_encoder=self.text_encoder,
            schedule={k: self.hparams.scheduler[k] for k in SCHEDULE_KEYS if k in self.hparams.scheduler},
            scale_factor=float(self.scale_factor),
            latent_shape=self.latent_shape,
            configs={
                "autoencoder": dict(self.hparams.autoencoder_arch),
                "unet": dict(self.hparams.unet),
                "text_encoder": dict(self.hparams.text_encoder),
            },
            source={"kind": "module", "ema": self.ema is not None},
        )

    @property
    def prediction_type(self) -> str:
        return self.hparams.scheduler["prediction_type"]

    @property
    def sampling_unet(self) -> torch.nn.Module:
        """The EMA UNet when EMA is on, else the trained UNet: what sampling and export use."""
        return self.ema.module if self.ema is not None else self.unet

    def train(self, mode: bool = True) -> LatentDiffusionModule:
        """Frozen parts stay in eval mode when Lightning switches the module to training."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    def configure_model(self) -> None:
        """The fast path for the trainer's device, once (``models/speed.py``); the UNet compiled in place."""
        if self._speed is not None or self._trainer is None:  # load_from_checkpoint calls this hook too
            return
        self._speed = resolve_speed(self.hparams.speed, self.hparams.compile, self.trainer.strategy.root_device)
        ema = [self.ema.module] if self.ema is not None else []
        pretrained_text = [] if self.text_encoder.persist_weights else [self.text_encoder]
        apply_speed(
            self._speed, networks=[self.unet, *ema, self.autoencoder], compiled=[self.unet], frozen_bf16=pretrained_text
        )

    # ------------------------------------------------------------------------------------ images <-> latents
    def _require_autoencoder(self) -> None:
        if not self._autoencoder_loaded:
            raise RuntimeError(
                "autoencoder weights were never loaded (autoencoder_arch set without a checkpoint)"
            )

    @torch.no_grad()
    def encode_latents(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(z_mu, z_sigma)`` of images in 0..1; the one image -> latent step (a cache can replace it)."""
        self._require_autoencoder()
        return self.autoencoder.encode(images)

    def posterior(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior of a batch: cached ``z_mu``/``z_sigma`` when the batch carries them, else encoded images."""
        if "z_mu" in batch and "z_sigma" in batch:
            z_mu, z_sigma = batch["z_mu"], batch["z_sigma"]
        else:
            z_mu, z_sigma = self.encode_latents(batch["image"])
        # float32 and NCHW whatever autocast and channels_last made of them: the same noise draws either way
        return z_mu.float().contiguous(), z_sigma.float().contiguous()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in 0..1 (clipped) from *scaled* latents, as the UNet produces them."""
        self._require_autoencoder()
        self._require_scale_factor()
        images = self.autoencoder.decode(latents / self.scale_factor.to(latents.dtype))
        return images.clamp(0.0, 1.0)

    def _require_scale_factor(self) -> None:
        if not torch.isfinite(self.scale_factor):
            raise RuntimeError(
                "scale_factor='auto' has not been measured yet: train on at least one batch first"
            )

    # -------------------------------------------------------------------------------------------- text
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Cross-attention context ``[B, 77, width]`` of token ids (frozen encoder, no gradients)."""
        return self.text_encoder(tokens.to(self.device)).float()  # float32 even from a bf16 tower

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Context of prompts, tokenized by the project's one tokenizer (the DataModule's)."""
        return self.encode_text(tokenize(list(prompts), context_length=self.text_encoder.context_length))

    def unconditional_context(self) -> torch.Tensor:
        """``[1, 77, width]``: the empty prompt, exactly as guidance dropout fed it to training."""
        return self.encode_prompts([""])

    def _batch_tokens(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if "tokens" in batch:
            return batch["tokens"]
        return tokenize(list(batch["text"]), context_length=self.text_encoder.context_length)

    # ----------------------------------------------------------------------------------------- training
    def _update_scale_factor(self, z_mu: torch.Tensor, z_sigma: torch.Tensor) -> None:
        """Running 1/std of the posterior latents over the first batches: std^2 = E[mu^2 + sigma^2] - E[mu]^2."""
        if not self.auto_scale or int(self.scale_batches_seen) >= self.hparams.scale_factor_batches:
            return
        mu, sigma = z_mu.double(), z_sigma.double()
        moments = torch.stack(
            [
                torch.tensor(float(mu.numel()), dtype=torch.float64, device=mu.device),
                mu.sum(),
                (mu**2 + sigma**2).sum(),
            ]
        )
        if self._trainer is not None and self.trainer.world_size > 1:
            moments = self.trainer.strategy.reduce(moments, reduce_op="sum")
        self.latent_moments += moments
        self.scale_batches_seen += 1
        count, total, total_sq = self.latent_moments
        variance = total_sq / count - (total / count) ** 2
        self.scale_factor.fill_(float(1.0 / math.sqrt(float(variance))))

    def diffusion_loss(
        self,
        latents: torch.Tensor,
        context: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        unet: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """MSE between the UNet's prediction and its target (velocity for v-prediction, else the noise)."""
        unet = self.unet if unet is None else unet
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps=timesteps, context=context)
        if self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        elif self.prediction_type == "epsilon":
            target = noise
        else:
            raise ValueError(
                f"unsupported prediction_type {self.prediction_type!r} (v_prediction or epsilon)"
            )
        return F.mse_loss(prediction.float(), target.float())

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        z_mu, z_sigma = self.posterior(batch)
        if not self._latent_shape_checked:
            self._check_latent_shape(tuple(z_mu.shape[1:]))
        self._update_scale_factor(z_mu, z_sigma)
        with torch.no_grad():
            latents = self.autoencoder.sampling(z_mu, z_sigma) * self.scale_factor
        context = self.encode_text(self._batch_tokens(batch))
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, self.noise_scheduler.num_train_timesteps, (latents.shape[0],), device=latents.device
        )
        loss = self.diffusion_loss(latents, context, noise, timesteps)
        batch_size = latents.shape[0]
        self.train_epoch_means["loss"](loss.detach(), batch_size)  # the step's value, and the epoch's mean
        self.log("train/loss", self.train_epoch_means["loss"], prog_bar=True, on_step=True, on_epoch=True)
        if self.auto_scale:
            self.log(
                "train/scale_factor", self.scale_factor, on_step=True, on_epoch=False, batch_size=batch_size
            )
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor | None:
        if not torch.isfinite(self.scale_factor):
            return None  # auto scale factor not measured yet (sanity check before the first training batch)
        z_mu, z_sigma = self.posterior(batch)
        # The same posterior noise, diffusion noise and timesteps for this batch in every epoch.
        gen = torch.Generator().manual_seed(self.hparams.val_seed + batch_idx)
        eps = torch.randn(z_mu.shape, generator=gen).to(z_mu)
        noise = torch.randn(z_mu.shape, generator=gen).to(z_mu)
        timesteps = torch.randint(
            0, self.noise_scheduler.num_train_timesteps, (z_mu.shape[0],), generator=gen
        )
        timesteps = timesteps.to(z_mu.device)
        latents = (z_mu + z_sigma * eps) * self.scale_factor
        context = self.encode_text(self._batch_tokens(batch))
        loss = self.diffusion_loss(latents, context, noise, timesteps)
        batch_size = latents.shape[0]
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=batch_size)
        if self.ema is not None:
            loss_ema = self.diffusion_loss(latents, context, noise, timesteps, unet=self.ema.module)
            self.log("val/loss_ema", loss_ema, on_epoch=True, sync_dist=True, batch_size=batch_size)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Only the UNet is optimized; the autoencoder, text encoder and EMA copy are frozen."""
        factory = self._optimizer_factory
        if factory is None:
            from hydra.utils import instantiate

            factory = instantiate({**self.hparams.optimizer, "_partial_": True})
        if self._speed is not None and self._speed.fused_adam:
            factory = fused_factory(factory)
        return factory(self.unet.parameters())

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.unet)

    # ------------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Pretrained text-encoder weights stay in their own file (never saved twice); every rank's RNG states
        go in, so that a resumed run draws each rank's own noise and timesteps (utils/rng.py), with the loader
        position and epoch means (models/resume_hooks.py)."""
        if not self.text_encoder.persist_weights:
            for key in [k for k in checkpoint["state_dict"] if k.startswith("text_encoder.")]:
                del checkpoint["state_dict"][key]
        super().on_save_checkpoint(checkpoint)  # the per-rank states; restored by ResumableFitHooks' other hooks

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Accept checkpoints without the (file-loaded) pretrained text-encoder weights."""
        state_dict = dict(state_dict)
        if not self.text_encoder.persist_weights and not any(
            k.startswith("text_encoder.") for k in state_dict
        ):
            state_dict.update({f"text_encoder.{k}": v for k, v in self.text_encoder.state_dict().items()})
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if any(k.startswith("autoencoder.") for k in state_dict):
            self._autoencoder_loaded = True
        return result

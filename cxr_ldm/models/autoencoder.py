"""Stage 1: the KL-regularised autoencoder (MONAI ``AutoencoderKL``) trained with a patch GAN."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from monai.networks.nets import AutoencoderKL, PatchDiscriminator
from torch.optim import Adam, Optimizer
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from cxr_ldm.models.losses import adversarial_factor, kl_divergence, least_squares_adversarial_loss
from cxr_ldm.models.ms_ssim import ms_ssim_settings
from cxr_ldm.models.perceptual import build_perceptual_loss
from cxr_ldm.models.resume_hooks import ResumableFitHooks, epoch_mean
from cxr_ldm.models.speed import Speed, apply_speed, fused_factory, resolve_speed
from cxr_ldm.utils.distributed import require_unused_parameter_detection
from cxr_ldm.utils.plain import to_plain

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], Optimizer]


def _no_closure() -> None:
    return None


class AutoencoderKLModule(ResumableFitHooks, LightningModule):
    """AutoencoderKL + PatchDiscriminator with manual (GAN) optimization.

    Generator loss: ``l1_weight * L1 + kl_weight * KL + perceptual_weight * LPIPS + adv_weight * LSGAN``; the
    discriminator minimises ``adv_weight * 0.5 * (LSGAN(fake) + LSGAN(real))`` on detached reconstructions.
    Both adversarial terms are multiplied by :func:`adversarial_factor` (0 before ``adv_start`` epochs, then a
    step or a linear warm-up); while it is 0 the discriminator is neither run nor stepped.

    Step counting: in Lightning's manual optimization every ``LightningOptimizer.step()`` increments the
    progress counter behind ``trainer.global_step``, so a batch with a generator and a discriminator step
    would count 2 (and 1 before ``adv_start``) and ``max_steps`` would stop early and inconsistently. The
    generator steps through its ``LightningOptimizer`` as usual; the discriminator steps through
    ``trainer.strategy.optimizer_step`` on the raw optimizer. That is the very path
    ``LightningOptimizer.step`` delegates to (the precision plugin: GradScaler unscale/step/update under
    16-mixed, the ``on_before_optimizer_step`` hooks, DDP model averaging), minus the progress counter. So
    ``trainer.global_step`` == number of generator steps, ``max_steps`` counts generator steps, and the
    counter saved in (and restored from) checkpoints is that same number. Checkpoints also carry the global
    RNG states, restored when fitting resumes, so that a resumed run draws the same latent noise as an
    uninterrupted one.

    Gradient clipping: Lightning forbids ``Trainer(gradient_clip_val)`` in manual optimization, so gradients
    are clipped by norm in :meth:`on_before_optimizer_step`, which the precision plugin calls after unscaling
    (clipping right after ``manual_backward`` would clip scaled gradients under 16-mixed).

    DDP: every backward pass leaves one network without gradients (``toggle_optimizer`` keeps the
    discriminator out of the generator's pass), so :meth:`setup` switches on DDP's ``find_unused_parameters``;
    plain ``strategy=ddp`` works.

    The perceptual network is built in :meth:`setup` for fitting only, and kept outside the module's
    parameters and state dict: checkpoints stay small, and stage 2 can ``load_from_checkpoint`` without the
    LPIPS weights.

    Args:
        autoencoder: keyword arguments of ``monai.networks.nets.AutoencoderKL``.
        discriminator: keyword arguments of ``monai.networks.nets.PatchDiscriminator``.
        l1_weight, kl_weight, perceptual_weight, adv_weight: loss weights (reference 1, 1e-8, 0.002, 0.005).
        perceptual_network: LPIPS backbone, ``squeeze`` | ``alex`` | ``vgg``.
        perceptual_weights_path: local backbone file; ``None`` uses the torch hub cache (see
            ``perceptual.py``).
        adv_start: first epoch (0-based) with adversarial terms.
        adv_warmup_epochs: linear ramp of the adversarial weight over that many epochs; 0 = step switch.
        grad_clip_norm: max gradient norm for both networks; ``None`` or 0 disables clipping.
        optimizer_g, optimizer_d: optimizer factories taking parameters (Hydra ``_partial_``); ``None`` = Adam
            with the reference learning rates (5e-5 generator, 1e-4 discriminator).
        speed: the fast-path switches (``models/speed.py``), applied by ``configure_model`` when a Trainer runs;
            fused Adam only where no GradScaler unscales (bf16-mixed, 32-true), and then clipped here.
        compile: ``torch.compile`` the autoencoder in place (true or a dict of compile arguments).
        gradient_checkpointing: recompute the encoder's and decoder's activations in the backward pass
            (MONAI's ``use_checkpoint``): less memory at 512 px for about a third more compute.
    """

    def __init__(
        self,
        autoencoder: Mapping[str, Any],
        discriminator: Mapping[str, Any],
        l1_weight: float = 1.0,
        kl_weight: float = 1e-8,
        perceptual_weight: float = 0.002,
        adv_weight: float = 0.005,
        perceptual_network: str = "squeeze",
        perceptual_weights_path: str | None = None,
        adv_start: int = 5,
        adv_warmup_epochs: int = 0,
        grad_clip_norm: float | None = 1.0,
        optimizer_g: OptimizerFactory | None = None,
        optimizer_d: OptimizerFactory | None = None,
        speed: Mapping[str, Any] | None = None,
        compile: bool | Mapping[str, Any] = False,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        # plain dicts for save_hyperparameters (checkpoints then load without OmegaConf objects)
        autoencoder = to_plain(autoencoder or {})
        discriminator = to_plain(discriminator or {})
        adversarial_factor(0, adv_start, adv_warmup_epochs)  # validates the schedule early
        self.save_hyperparameters(ignore=["optimizer_g", "optimizer_d"])
        self.automatic_optimization = False

        self.autoencoder = AutoencoderKL(**autoencoder)
        self.discriminator = PatchDiscriminator(**discriminator)
        self.autoencoder.use_checkpoint = bool(gradient_checkpointing)  # not in the arch: stage 2 never needs it
        resolve_speed(speed, compile, torch.device("cpu"))  # a bad switch fails here, not when fitting starts
        self._speed: Speed | None = None
        self.adversarial_loss = least_squares_adversarial_loss()
        self._optimizer_g = optimizer_g or partial(Adam, lr=5e-5)
        self._optimizer_d = optimizer_d or partial(Adam, lr=1e-4)
        # not an nn.Module attribute on purpose (see class docstring); built by setup("fit")
        self._perceptual: torch.nn.Module | None = None
        self.train_epoch_means = torch.nn.ModuleDict({"l1": epoch_mean()})  # continued by a mid-epoch resume

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        """Build the LPIPS loss before fitting, so that missing weights fail before any training step."""
        if stage == "fit":
            # the generator's backward leaves the discriminator without gradients (toggled off, or not run
            # before adv_start), the discriminator's leaves the autoencoder without: setup runs before DDP wraps
            require_unused_parameter_detection(self.trainer.strategy, type(self).__name__)
        if stage == "fit" and self.hparams.perceptual_weight > 0 and self._perceptual is None:
            perceptual = build_perceptual_loss(
                self.hparams.perceptual_network, self.hparams.perceptual_weights_path
            )
            object.__setattr__(self, "_perceptual", perceptual)  # bypass nn.Module registration

    def configure_model(self) -> None:
        """The fast path for the trainer's device, once (``models/speed.py``); the autoencoder compiled in place."""
        if self._speed is None and self._trainer is not None:  # load_from_checkpoint calls this hook too
            self._speed = resolve_speed(self.hparams.speed, self.hparams.compile, self.trainer.strategy.root_device)
            apply_speed(self._speed, networks=[self.autoencoder, self.discriminator], compiled=[self.autoencoder])

    def configure_optimizers(self) -> list[Optimizer]:
        factories = [self._optimizer_g, self._optimizer_d]
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer is not None else None
        if self._speed is not None and self._speed.fused_adam and scaler is None:
            factories = [fused_factory(f) for f in factories]
        return [factories[0](self.autoencoder.parameters()), factories[1](self.discriminator.parameters())]

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        if self.hparams.grad_clip_norm and getattr(optimizer, "_step_supports_amp_scaling", False):
            # fused Adam, which Lightning will not clip; only used without a GradScaler: gradients are unscaled
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.hparams.grad_clip_norm)
        elif self.hparams.grad_clip_norm:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.hparams.grad_clip_norm, gradient_clip_algorithm="norm"
            )

    # checkpoints: every rank's RNG states, loader position and epoch means in, each rank's own back when
    # fitting resumes (ResumableFitHooks)

    # --------------------------------------------------------------- training
    def adversarial_factor(self) -> float:
        return adversarial_factor(self.current_epoch, self.hparams.adv_start, self.hparams.adv_warmup_epochs)

    def _perceptual_loss(self, reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        # as the reference: images go in as 0..1 (LPIPS nominally wants -1..1); 1 channel broadcasts to 3
        assert self._perceptual is not None
        if next(self._perceptual.parameters()).device != images.device:
            self._perceptual.to(images.device)
        return self._perceptual(reconstruction.float(), images.float())

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        images = batch["image"]
        opt_g, opt_d = self.optimizers()
        hp = self.hparams
        factor = self.adversarial_factor() if hp.adv_weight > 0 else 0.0

        # generator (autoencoder) step; the discriminator's parameters get no gradients
        self.toggle_optimizer(opt_g)
        reconstruction, z_mu, z_sigma = self.autoencoder(images)
        l1 = F.l1_loss(reconstruction.float(), images.float())
        kl = kl_divergence(z_mu, z_sigma)
        loss_g = hp.l1_weight * l1 + hp.kl_weight * kl
        logs = {"train/l1": l1, "train/kl": kl, "train/adv_factor": factor}
        if self._perceptual is not None:
            perceptual = self._perceptual_loss(reconstruction, images)
            loss_g = loss_g + hp.perceptual_weight * perceptual
            logs["train/perceptual"] = perceptual
        if factor > 0:
            logits_fake = self.discriminator(reconstruction.contiguous())[-1]
            adv_g = self.adversarial_loss(logits_fake.float(), target_is_real=True, for_discriminator=False)
            loss_g = loss_g + factor * hp.adv_weight * adv_g
            logs["train/adv_g"] = adv_g
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()  # counted: global_step == generator steps
        self.untoggle_optimizer(opt_g)
        logs["train/loss_g"] = loss_g

        if factor > 0:
            self.toggle_optimizer(opt_d)
            logits_fake = self.discriminator(reconstruction.detach().contiguous())[-1]
            logits_real = self.discriminator(images.contiguous())[-1]
            loss_fake = self.adversarial_loss(
                logits_fake.float(), target_is_real=False, for_discriminator=True
            )
            loss_real = self.adversarial_loss(
                logits_real.float(), target_is_real=True, for_discriminator=True
            )
            loss_d = 0.5 * (loss_fake + loss_real)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(factor * hp.adv_weight * loss_d)
            # not counted: the precision plugin's step without LightningOptimizer's progress counter
            self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=_no_closure, model=self)
            self.untoggle_optimizer(opt_d)
            logs["train/loss_d"] = loss_d

        self.log_dict(
            {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in logs.items()},
            on_step=True,
            on_epoch=False,
            batch_size=images.shape[0],
        )
        self.train_epoch_means["l1"].update(l1.detach(), len(images))
        self.log("train/l1_epoch", self.train_epoch_means["l1"], on_step=False, on_epoch=True)  # all ranks' mean
        return loss_g.detach()

    # ------------------------------------------------------------- evaluation
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean (no sampling), clipped to the image range 0..1."""
        return self.autoencoder.reconstruct(images).clamp(0.0, 1.0)

    def _evaluate(self, batch: Mapping[str, Any], prefix: str) -> None:
        images = batch["image"]
        reconstruction = self.reconstruct(images)
        with torch.autocast(device_type=images.device.type, enabled=False):
            preds, target = reconstruction.float(), images.float().clamp(0.0, 1.0)
            l1 = (preds - target).abs().mean()
            settings = ms_ssim_settings(*images.shape[-2:])
            ms_ssim = multiscale_structural_similarity_index_measure(
                preds, target, data_range=1.0, **settings.as_kwargs()
            )
            mse = (preds - target).pow(2).flatten(1).mean(dim=1)
            psnr = (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()  # per image, then averaged
        self.log_dict(
            {f"{prefix}/l1": l1, f"{prefix}/ms_ssim": ms_ssim, f"{prefix}/psnr": psnr},
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=images.shape[0],
        )

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

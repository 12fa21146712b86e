"""Stage 1 written by hand (plain) or the way the reference trains (reference), for ``ours / plain``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from cxr_ldm.models.speed import Speed, resolve_speed, use_sdpa

from .timing import Timing, Window, autocast, free, set_global_flags


class PlainAEKL:
    """Stage 1 by hand: L1 + KL + LPIPS + LSGAN generator step, then the discriminator step, both clipped."""

    def __init__(self, cfg: Any, device: torch.device, reference: bool) -> None:
        from monai.networks.nets import AutoencoderKL, PatchDiscriminator

        from cxr_ldm.models.losses import least_squares_adversarial_loss
        from cxr_ldm.models.perceptual import build_perceptual_loss

        model = OmegaConf.to_container(cfg.model, resolve=True)
        self.m, self.device, self.reference = model, device, reference
        self.precision = ("16-mixed" if device.type == "cuda" else "32-true") if reference else cfg.trainer.precision
        self.speed = Speed() if reference else resolve_speed(model.get("speed"), model.get("compile"), device)
        self.cudnn_benchmark = False if reference else bool(cfg.trainer.get("benchmark") or False)
        torch.manual_seed(0)
        self.ae = AutoencoderKL(**model["autoencoder"])
        self.ae.use_checkpoint = bool(model.get("gradient_checkpointing")) and not reference
        self.disc = PatchDiscriminator(**model["discriminator"])
        self.perceptual = None
        if model["perceptual_weight"] > 0:
            self.perceptual = build_perceptual_loss(model["perceptual_network"], model.get("perceptual_weights_path"))
        self.adv = least_squares_adversarial_loss()
        if self.speed.sdpa:
            use_sdpa(self.ae)
        if self.speed.channels_last:
            self.ae.to(memory_format=torch.channels_last)
            self.disc.to(memory_format=torch.channels_last)
        if self.speed.compile is not None:
            self.ae.compile(**self.speed.compile)

    def _nets(self) -> list[torch.nn.Module]:
        return [self.ae, self.disc, *([self.perceptual] if self.perceptual is not None else [])]

    def run(self, batches: DataLoader, window: Window) -> Timing:
        from cxr_ldm.models.losses import kl_divergence

        dev, m = self.device, self.m
        set_global_flags(self.speed.tf32, self.cudnn_benchmark)
        for net in self._nets():
            net.to(dev)
        self.ae.train()
        self.disc.train()
        fused = {"fused": True} if self.speed.fused_adam and not self.precision.startswith("16") else {}
        opt_g = torch.optim.Adam(self.ae.parameters(), lr=m["optimizer_g"]["lr"], **fused)
        opt_d = torch.optim.Adam(self.disc.parameters(), lr=m["optimizer_d"]["lr"], **fused)
        scaler = torch.amp.GradScaler(dev.type) if self.precision.startswith("16") else None
        clip = m.get("grad_clip_norm") or 0.0

        def step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list[torch.nn.Parameter]) -> None:
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                if clip:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                opt.step()

        g_params, d_params = list(self.ae.parameters()), list(self.disc.parameters())
        for index, batch in enumerate(batches):
            if index == window.warmup + window.steps:
                break
            window.before_step()
            images = batch["image"].to(dev, non_blocking=True)
            self.disc.requires_grad_(False)  # what Lightning's toggle_optimizer does
            with autocast(dev, self.precision):
                reconstruction, z_mu, z_sigma = self.ae(images)
                l1 = F.l1_loss(reconstruction.float(), images.float())
                loss_g = m["l1_weight"] * l1 + m["kl_weight"] * kl_divergence(z_mu, z_sigma)
                if self.perceptual is not None:
                    loss_g = loss_g + m["perceptual_weight"] * self.perceptual(reconstruction.float(), images.float())
                fake = self.disc(reconstruction.contiguous())[-1]
                loss_g = loss_g + m["adv_weight"] * self.adv(fake.float(), target_is_real=True, for_discriminator=False)
            step(opt_g, loss_g, g_params)
            self.disc.requires_grad_(True)
            with autocast(dev, self.precision):
                fake = self.disc(reconstruction.detach().contiguous())[-1]
                real = self.disc(images.contiguous())[-1]
                loss_d = 0.5 * (self.adv(fake.float(), target_is_real=False, for_discriminator=True)
                                + self.adv(real.float(), target_is_real=True, for_discriminator=True))  # fmt: skip
            step(opt_d, m["adv_weight"] * loss_d, d_params)
            if index % 10 == 0:
                loss_g.detach().item()
            window.after_step()
        for net in self._nets():
            net.to("cpu")
        del opt_g, opt_d
        free(dev)
        return window.timing


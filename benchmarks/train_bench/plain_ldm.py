"""Stage 2 written by hand (plain) or the way the reference trains (reference), for ``ours / plain``."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from cxr_ldm.models.speed import Speed, resolve_speed, use_sdpa

from .timing import Timing, Window, autocast, free, set_global_flags


class PlainLDM:
    """Stage 2 by hand: posterior sample, frozen text tower, v-prediction MSE, AdamW, EMA (foreach lerp)."""

    def __init__(self, cfg: Any, device: torch.device, reference: bool) -> None:
        from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
        from monai.networks.schedulers import DDPMScheduler

        from cxr_ldm.models.diffusion import DEFAULT_SCHEDULER, read_autoencoder_checkpoint
        from cxr_ldm.models.text_encoder import build_text_encoder

        model = OmegaConf.to_container(cfg.model, resolve=True)
        self.device, self.reference = device, reference
        self.precision = ("16-mixed" if device.type == "cuda" else "32-true") if reference else cfg.trainer.precision
        self.speed = Speed() if reference else resolve_speed(model.get("speed"), model.get("compile"), device)
        self.cudnn_benchmark = False if reference else bool(cfg.trainer.get("benchmark") or False)
        arch, state = read_autoencoder_checkpoint(model["autoencoder_ckpt"])
        self.ae = AutoencoderKL(**arch)
        self.ae.load_state_dict(state)
        self.ae.requires_grad_(False).eval()
        self.text = build_text_encoder(model["text_encoder"])
        torch.manual_seed(0)
        self.unet = DiffusionModelUNet(**model["unet"])
        self.scheduler = DDPMScheduler(**{**DEFAULT_SCHEDULER, **model.get("scheduler", {})})
        self.v_prediction = self.scheduler.prediction_type == "v_prediction"
        self.scale = 0.3 if model.get("scale_factor") == "auto" else float(model.get("scale_factor", 1.0))
        self.lr = float(model["optimizer"]["lr"])
        self.ema = None if reference or model.get("ema_decay") is None else copy.deepcopy(self.unet).requires_grad_(False)
        self.ema_decay = model.get("ema_decay")
        if self.speed.sdpa:
            use_sdpa(self.unet)
            use_sdpa(self.ae)
        if self.speed.channels_last:
            for net in (self.unet, self.ae, *([self.ema] if self.ema is not None else [])):
                net.to(memory_format=torch.channels_last)
        if self.speed.frozen_bf16 and not self.text.persist_weights:
            self.text.to(torch.bfloat16)
        if self.speed.compile is not None:
            self.unet.compile(**self.speed.compile)

    def _nets(self) -> list[torch.nn.Module]:
        return [self.ae, self.text, self.unet, *([self.ema] if self.ema is not None else [])]

    def run(self, batches: DataLoader, window: Window) -> Timing:
        dev = self.device
        set_global_flags(self.speed.tf32, self.cudnn_benchmark)
        for net in self._nets():
            net.to(dev)
        self.unet.train()
        fused = {"fused": True} if self.speed.fused_adam else {}
        opt = torch.optim.AdamW(self.unet.parameters(), lr=self.lr, **fused)
        scaler = torch.amp.GradScaler(dev.type) if self.precision.startswith("16") else None
        params = list(self.unet.parameters())
        ema_params = list(self.ema.parameters()) if self.ema is not None else []
        n_updates, T = 0, self.scheduler.num_train_timesteps
        for step, batch in enumerate(batches):
            if step == window.warmup + window.steps:
                break
            window.before_step()
            tokens = batch["tokens"].to(dev, non_blocking=True)
            with torch.no_grad(), autocast(dev, self.precision):
                if "z_mu" in batch and not self.reference:
                    mu, sigma = batch["z_mu"].to(dev, non_blocking=True), batch["z_sigma"].to(dev, non_blocking=True)
                else:
                    mu, sigma = self.ae.encode(batch["image"].to(dev, non_blocking=True))
                mu, sigma = mu.float().contiguous(), sigma.float().contiguous()
                latents = (mu + sigma * torch.randn_like(sigma)) * self.scale
                context = self.text(tokens).float()
            noise = torch.randn_like(latents)
            t = torch.randint(0, T, (latents.shape[0],), device=dev)
            with autocast(dev, self.precision):
                prediction = self.unet(self.scheduler.add_noise(latents, noise, t), timesteps=t, context=context)
                target = self.scheduler.get_velocity(latents, noise, t) if self.v_prediction else noise
                loss = F.mse_loss(prediction.float(), target.float())
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            if self.ema is not None:
                d = min(self.ema_decay, (1 + n_updates) / (10 + n_updates))
                with torch.no_grad():
                    torch._foreach_lerp_(ema_params, params, 1 - d)
                n_updates += 1
            if step % 10 == 0:
                loss.detach().item()  # a log line every 10 steps, as log_every_n_steps
            window.after_step()
        for net in self._nets():
            net.to("cpu")
        del opt
        free(dev)
        return window.timing


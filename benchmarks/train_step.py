"""Training images/s and peak memory of one stage: our LightningModule under a real Trainer against plain PyTorch.

Sides, timed alternately in the same process (``--rounds``), each round ``--warmup`` untimed steps then ``--steps``
timed ones, on the same in-memory batches:

* ``ours``: the project's module and Trainer, built by Hydra from the experiment configs exactly as
  ``python -m cxr_ldm.train experiment=...`` builds them (fast path, precision, cuDNN benchmark, CSV logger,
  progress bar), only checkpointing and validation off. ``--variant`` adds more "ours" sides with extra overrides
  (e.g. ``--variant model.speed.channels_last=false``) for ablations;
* ``plain``: a hand-written PyTorch loop of the same maths with the same switches (same networks, losses, EMA,
  clipping, precision, SDPA, channels_last, fused Adam, compile): ``ours / plain`` is the framework's overhead;
* ``reference``: a loop written the way the reference trains: online encoding, fp16 autocast with a GradScaler
  (fp32 on a CPU), eager, explicit attention, NCHW, TF32 and cuDNN benchmark off, unfused Adam(W), no EMA.

With ``--cache on`` (stage 2) the batches carry the posterior ``z_mu``/``z_sigma`` (what ``data.latent_cache``
provides, rounded through fp16) for ours and plain; the reference always encodes online. MFU (stage 2, CUDA) is
the UNet's forward+backward FLOPs (``torch.utils.flop_counter`` on the meta device) per second over the GPU's
dense bf16 peak. Random weights throughout (speed does not depend on them); LPIPS's squeezenet and the ViT-H-14
text tower are written as random-weight files in their real formats under ``--work``.

    python benchmarks/train_step.py --stage ldm --nets tiny --device cpu
    python benchmarks/train_step.py --stage ldm --nets reference --device cuda --cache on --baselines plain,reference
    python benchmarks/train_step.py --stage aekl --nets reference --device cuda --compile on --baselines reference
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_ldm.data.tokenization import tokenize  # noqa: E402
from cxr_ldm.models.speed import Speed, resolve_speed, use_sdpa  # noqa: E402
from cxr_ldm.utils import resolvers  # noqa: E402,F401  (${cwd:} and friends)

CONF = REPO / "cxr_ldm" / "conf"
EXPERIMENTS = {
    ("aekl", "tiny"): "aekl_phantom",
    ("aekl", "reference"): "aekl",
    ("ldm", "tiny"): "ldm_phantom",
    ("ldm", "reference"): "ldm",
}
# dense (no sparsity) bf16 tensor-core peaks, TFLOPS
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "H800": 989.4, "GH200": 989.4, "A100": 312.0, "A800": 312.0,
                    "L40S": 362.1, "L40": 181.0, "A10G": 70.0, "L4": 121.0}  # fmt: skip
TEXTS = ["Large right pleural effusion.", "", "No acute cardiopulmonary process.", "Moderate cardiomegaly.",
         "Left basilar consolidation. Small left effusion.", "Heart size is normal. Lungs are clear."]  # fmt: skip


# --------------------------------------------------------------------------------------------- set-up
def compose_config(stage: str, nets: str, device: str, work: Path, overrides: list[str]) -> Any:
    """The experiment's config as ``cxr_ldm.train`` composes it, pointed at ``work`` for every path."""
    base = [
        f"experiment={EXPERIMENTS[(stage, nets)]}", f"trainer={'gpu' if device == 'cuda' else 'cpu'}",
        "logger=csv", "callbacks=none", f"paths.output_dir={work}", f"paths.work_dir={work}",
        f"paths.root_dir={work}", "data.num_workers=0",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=base + overrides)


def write_weight_files(
    cfg: Any, stage: str, work: Path, text_weights: Path | None, notes: list[str], text: bool = True
) -> list[str]:
    """Random-weight files in the real formats that the configs read; returns the overrides pointing at them."""
    from monai.networks.nets import AutoencoderKL

    out: list[str] = []
    if stage == "aekl" and cfg.model.perceptual_weight > 0:
        try:
            import lpips  # noqa: F401  (imports scipy)
        except ImportError as error:
            notes.append(f"perceptual term off on every side: lpips cannot be imported here ({error})")
            return ["model.perceptual_weight=0"]
        import torchvision

        path = work / f"{cfg.model.perceptual_network}_backbone.pth"
        if cfg.model.perceptual_network != "squeeze":
            raise SystemExit("the benchmark writes only squeezenet (the reference's LPIPS backbone)")
        torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
        out.append(f"model.perceptual_weights_path={path}")
    if stage == "ldm":
        stage1 = compose_config("aekl", "reference" if cfg.model.unet.channels[0] >= 256 else "tiny", "cpu", work, [])
        arch = OmegaConf.to_container(stage1.model.autoencoder, resolve=True)
        torch.manual_seed(0)
        ae = AutoencoderKL(**arch)
        path = work / "aekl.ckpt"
        torch.save({"hyper_parameters": {"autoencoder": arch},
                    "state_dict": {f"autoencoder.{k}": v for k, v in ae.state_dict().items()}}, path)  # fmt: skip
        out.append(f"model.autoencoder_ckpt={path}")
        if text and cfg.model.text_encoder.get("seed") is None:  # a pretrained tower (sd21): its file, random weights
            if text_weights is None:
                text_weights = work / "open_clip_pytorch_model.bin"
            if not text_weights.is_file():
                from cxr_ldm.models.text_encoder import FrozenOpenCLIPTextEncoder

                text = OmegaConf.to_container(cfg.model.text_encoder, resolve=True)
                tower = FrozenOpenCLIPTextEncoder(model_name=text["model_name"], text_cfg=text["text_cfg"], seed=0)
                torch.save(tower.tower.state_dict(), text_weights)
            out.append(f"model.text_encoder.weights_path={text_weights}")
    return out


class Batches(Dataset):
    """In-memory training items shaped like the DataModule's (``image`` or cached ``z_mu``/``z_sigma``)."""

    def __init__(self, n: int, size: int, latents: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        gen = torch.Generator().manual_seed(0)
        axis = torch.linspace(-1, 1, size)
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        centres = torch.rand(n, 2, generator=gen) - 0.5
        radius = 0.2 + 0.4 * torch.rand(n, generator=gen)
        blobs = torch.exp(-((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2) / radius[:, None, None] ** 2)
        self.images = (0.2 + 0.7 * blobs + 0.05 * torch.rand(n, size, size, generator=gen)).clamp(0, 1)[:, None]
        self.texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
        self.tokens = tokenize(self.texts)
        self.latents = latents

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"tokens": self.tokens[i], "text": self.texts[i]}
        if self.latents is None:
            item["image"] = self.images[i]
        else:
            item["z_mu"], item["z_sigma"] = self.latents[0][i], self.latents[1][i]
        return item


def loader(dataset: Dataset, batch_size: int, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=0,
                      pin_memory=device.type == "cuda")  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class Timing:
    seconds: float = 0.0
    first_step_s: float = 0.0  # includes compilation and cuDNN autotuning on the first round
    peak_gib: float | None = None


@dataclass
class Window:
    """Start/stop of the timed steps: after ``warmup`` steps, for ``steps`` steps."""

    warmup: int
    steps: int
    device: torch.device
    seen: int = 0
    timing: Timing = field(default_factory=Timing)
    _start: float = 0.0
    _first: float = 0.0

    def before_step(self) -> None:
        if self.seen == 0:
            self._first = time.perf_counter()
        if self.seen == self.warmup:
            sync(self.device)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            self._start = time.perf_counter()

    def after_step(self) -> None:
        self.seen += 1
        if self.seen == 1:
            sync(self.device)
            self.timing.first_step_s = time.perf_counter() - self._first
        if self.seen == self.warmup + self.steps:
            sync(self.device)
            self.timing.seconds = time.perf_counter() - self._start
            if self.device.type == "cuda":
                self.timing.peak_gib = torch.cuda.max_memory_allocated(self.device) / 2**30


class WindowCallback(L.Callback):
    def __init__(self, window: Window) -> None:
        self.window = window

    def on_train_batch_start(self, *args: Any) -> None:
        self.window.before_step()

    def on_train_batch_end(self, *args: Any) -> None:
        self.window.after_step()


def set_global_flags(tf32: bool, cudnn_benchmark: bool) -> None:
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.benchmark = cudnn_benchmark


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------ ours
class Ours:
    """The LightningModule from the composed config, fitted by the composed Trainer each round."""

    def __init__(self, name: str, cfg: Any, device: torch.device, work: Path) -> None:
        self.name, self.cfg, self.device, self.work = name, cfg, device, work
        torch.manual_seed(0)
        self.module = instantiate(cfg.model, _convert_="all")
        model = OmegaConf.to_container(cfg.model, resolve=True)
        self.speed = resolve_speed(model.get("speed"), model.get("compile"), device)

    def run(self, batches: DataLoader, window: Window) -> Timing:
        from lightning.pytorch.loggers import CSVLogger

        # the global switches as this module's first fit set them (configure_model applies them once)
        set_global_flags(self.speed.tf32, bool(self.cfg.trainer.get("benchmark") or False))
        trainer = instantiate(
            self.cfg.trainer, max_steps=window.warmup + window.steps, limit_val_batches=0, num_sanity_val_steps=0,
            enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(self.work),
            logger=CSVLogger(str(self.work), name=f"csv_{self.name}"), callbacks=[WindowCallback(window)],
            _convert_="all",
        )  # fmt: skip
        trainer.fit(self.module, train_dataloaders=batches)
        self.module.to("cpu")
        self.module._trainer = None
        del trainer
        free(self.device)
        return window.timing


# ----------------------------------------------------------------------------------------------- plain
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


# ------------------------------------------------------------------------------------------------ FLOPs
def unet_training_flops(unet_kwargs: dict[str, Any], latent_shape: tuple[int, ...], width: int) -> int:
    """FLOPs of one image's UNet forward + backward (counted on the meta device: nothing is computed)."""
    from monai.networks.nets import DiffusionModelUNet
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = DiffusionModelUNet(**unet_kwargs)
        x = torch.randn(1, *latent_shape)
        t = torch.zeros(1, dtype=torch.long)
        context = torch.randn(1, 77, width)
    with FlopCounterMode(display=False) as counter:
        unet(x, timesteps=t, context=context).sum().backward()
    return int(counter.get_total_flops())


def read_arch(cfg: Any) -> dict[str, Any]:
    from cxr_ldm.models.diffusion import read_autoencoder_checkpoint

    return read_autoencoder_checkpoint(cfg.model.autoencoder_ckpt)[0]


def frozen_flops(cfg: Any, size: int) -> dict[str, float]:
    """GFLOP per image of the frozen parts of a stage-2 step: the AE encoder (online encoding only) and the text
    tower, counted on the meta device."""
    from monai.networks.nets import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    from cxr_ldm.models.text_encoder import FrozenOpenCLIPTextEncoder

    arch = read_arch(cfg)
    text = OmegaConf.to_container(cfg.model.text_encoder, resolve=True)
    with torch.device("meta"):
        ae = AutoencoderKL(**arch)
        tower = FrozenOpenCLIPTextEncoder(model_name=text.get("model_name"), text_cfg=text.get("text_cfg"), seed=0)
        images, tokens = torch.randn(1, 1, size, size), torch.zeros(1, 77, dtype=torch.long)
    out = {}
    for name, fn in (("encoder_fwd", lambda: ae.encode(images)), ("text_fwd", lambda: tower(tokens))):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        out[name] = counter.get_total_flops() / 1e9
    return out


def gpu_peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "given"
    if device.type != "cuda":
        return None, ""
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_TFLOPS[key], name
    return None, name


# ------------------------------------------------------------------------------------------------- main
def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["aekl", "ldm"], default="ldm")
    p.add_argument("--nets", choices=["tiny", "reference"], default="tiny")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--cache", choices=["on", "off"], default="on", help="stage 2: cached posteriors (ours, plain)")
    p.add_argument("--compile", choices=["on", "off"], default="off", help="model.compile for ours and plain")
    p.add_argument("--baselines", default="plain", help="comma list of plain, reference (or 'none')")
    p.add_argument("--variant", action="append", default=[], help="more 'ours' sides: space-separated overrides")
    p.add_argument("--override", action="append", default=[], help="Hydra overrides for every side")
    p.add_argument("--batch-size", type=int, default=None, help="default: the experiment's data.batch_size")
    p.add_argument("--image-size", type=int, default=None, help="default: the experiment's data.image_size")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--peak-tflops", type=float, default=None, help="GPU dense bf16 peak for MFU")
    p.add_argument("--text-weights", type=Path, default=None, help="reuse a written ViT-H-14 tower file")
    p.add_argument("--work", type=Path, default=None, help="folder for the weight files and CSV logs")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--flops-only", action="store_true", help="stage 2: print the FLOP counts and stop")
    return p.parse_args()


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    work = args.work or Path(tempfile.mkdtemp(prefix="cxr_ldm_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    common = list(args.override)
    if args.compile == "on":
        common.append("model.compile=true")
    if args.stage == "aekl":
        common.append("model.adv_start=0")  # the GAN step in every timed step
    if args.batch_size:
        common.append(f"data.batch_size={args.batch_size}")
    if args.image_size:
        common.append(f"data.image_size={args.image_size}")
    cfg = compose_config(args.stage, args.nets, args.device, work, common)
    notes: list[str] = []
    common += write_weight_files(cfg, args.stage, work, args.text_weights, notes, text=not args.flops_only)
    cfg = compose_config(args.stage, args.nets, args.device, work, common)
    batch_size, size = int(cfg.data.batch_size), int(cfg.data.image_size)
    if args.flops_only:
        unet = OmegaConf.to_container(cfg.model.unet, resolve=True)
        factor = 2 ** (len(read_arch(cfg)["channels"]) - 1)
        latent = (unet["in_channels"], size // factor, size // factor)
        flops = {"unet_fwd_bwd": unet_training_flops(unet, latent, unet["cross_attention_dim"]) / 1e9,
                 **frozen_flops(cfg, size)}  # fmt: skip
        print(f"stage 2, {args.nets} networks, {size} px (latent {latent}): GFLOP per image " + json.dumps(flops))
        return
    n = batch_size * (args.warmup + args.steps)

    sides: dict[str, Any] = {"ours": Ours("ours", cfg, device, work)}
    online_sides = set() if args.cache == "on" else {"ours", "plain"}
    for variant in args.variant:  # Hydra overrides, plus "cache=off" / "cache=on" for the batches
        tokens = [t for t in variant.split() if not t.startswith("cache=")]
        name = f"ours[{variant}]"
        sides[name] = Ours(f"v{len(sides)}", compose_config(args.stage, args.nets, args.device, work, common + tokens),
                           device, work)  # fmt: skip
        if "cache=off" in variant.split() or (args.cache == "off" and "cache=on" not in variant.split()):
            online_sides.add(name)
    plain_cls = PlainLDM if args.stage == "ldm" else PlainAEKL
    for baseline in [b for b in args.baselines.split(",") if b and b != "none"]:
        if baseline not in ("plain", "reference"):
            raise SystemExit(f"--baselines: unknown {baseline!r} (plain, reference)")
        sides[baseline] = plain_cls(cfg, device, reference=baseline == "reference")

    online = Batches(n, size)
    cached = online
    if args.stage == "ldm" and args.cache == "on":
        ae = sides["ours"].module.autoencoder.to(device)
        with torch.no_grad():
            parts = [ae.encode(online.images[i : i + 8].to(device)) for i in range(0, n, 8)]
        ae.to("cpu")
        mu, sigma = (torch.cat([p[k] for p in parts]).half().float().cpu() for k in (0, 1))
        cached = Batches(n, size, latents=(mu, sigma))

    results: dict[str, list[Timing]] = {name: [] for name in sides}
    for _ in range(args.rounds):  # alternate: drift and other load hit every side alike
        for name, side in sides.items():
            data = online if name == "reference" or name in online_sides else cached
            window = Window(args.warmup, args.steps, device)
            results[name].append(side.run(loader(data, batch_size, device), window))

    latent = sides["ours"].module.latent_shape if args.stage == "ldm" else None
    report = summarise(args, cfg, device, batch_size, size, results, latent)
    report["notes"] = notes
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


def summarise(args, cfg, device, batch_size, size, results, latent) -> dict[str, Any]:
    rows = {}
    for name, timings in results.items():
        rates = [batch_size * args.steps / t.seconds for t in timings]
        peaks = [t.peak_gib for t in timings if t.peak_gib is not None]
        rows[name] = {
            "images_per_s": statistics.median(rates), "per_round": rates,
            "peak_gib": max(peaks) if peaks else None, "first_step_s": timings[0].first_step_s,
        }  # fmt: skip
    if "ours" in rows:
        for row in rows.values():
            row["ours_over_this"] = rows["ours"]["images_per_s"] / row["images_per_s"]
            per_round = [a / b for a, b in zip(rows["ours"]["per_round"], row["per_round"], strict=True)]
            row["per_round_ours_over_this"] = per_round
            row["median_round_ratio"] = statistics.median(per_round)
    report: dict[str, Any] = {
        "stage": args.stage, "nets": args.nets, "device": str(device),
        "cache": args.cache if args.stage == "ldm" else "n/a", "compile": args.compile,
        "batch_size": batch_size, "image_size": size, "steps": args.steps, "warmup": args.warmup,
        "rounds": args.rounds, "precision": cfg.trainer.precision, "torch": torch.__version__,
        "lightning": L.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "rows": rows,
        "overrides": args.override, "variants": args.variant,
    }  # fmt: skip
    if args.stage == "ldm":
        unet = OmegaConf.to_container(cfg.model.unet, resolve=True)
        flops = unet_training_flops(unet, latent, unet["cross_attention_dim"])
        report["unet_gflop_per_image_fwd_bwd"] = flops / 1e9
        report["frozen_gflop_per_image"] = frozen_flops(cfg, size)
        peak, gpu = gpu_peak_tflops(device, args.peak_tflops)
        if peak:
            report["peak_bf16_tflops"] = peak
            for row in rows.values():
                row["mfu"] = row["images_per_s"] * flops / (peak * 1e12)
    return report


def print_report(report: dict[str, Any]) -> None:
    head = (f"stage={report['stage']} nets={report['nets']} device={report['device']}"
            f"{' (' + report['gpu'] + ')' if report['gpu'] else ''} cache={report['cache']} compile={report['compile']} "
            f"batch={report['batch_size']} size={report['image_size']} precision={report['precision']} "
            f"steps={report['steps']}x{report['rounds']} rounds (warm-up {report['warmup']}) threads={report['threads']}")  # fmt: skip
    print(head)
    for note in report.get("notes", []):
        print(f"NOTE: {note}")
    if "unet_gflop_per_image_fwd_bwd" in report:
        unet, frozen = report["unet_gflop_per_image_fwd_bwd"], report["frozen_gflop_per_image"]
        share = frozen["encoder_fwd"] / (unet + frozen["encoder_fwd"] + frozen["text_fwd"])
        print(f"UNet forward+backward: {unet:.1f} GFLOP per image; frozen AE encoder {frozen['encoder_fwd']:.1f} "
              f"(online encoding only: {100 * share:.0f} % of an online step's FLOPs), text tower {frozen['text_fwd']:.1f}")
    mfu = any("mfu" in r for r in report["rows"].values())
    print("| side | images/s (median) | per round | ours / side (medians) | ours / side (median of rounds) | peak GiB "
          "| first step s |" + (" MFU |" if mfu else ""))  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if mfu else ""))
    for name, r in report["rows"].items():
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        rounds = ", ".join(f"{x:.2f}" for x in r["per_round"])
        ratio = f"{r.get('ours_over_this', float('nan')):.3f} | {r.get('median_round_ratio', float('nan')):.3f}"
        line = f"| {name} | {r['images_per_s']:.2f} | {rounds} | {ratio} | {peak} | {r['first_step_s']:.2f} |"
        print(line + (f" {100 * r['mfu']:.1f} % |" if mfu else ""))


if __name__ == "__main__":
    main()

"""Images/s of the pipeline per sampler and step count, against the released bundle's own loop on the same networks.

The baseline is the MONAI bundle's ``scripts/sampler.py`` written out: fp32, one image at a time (a batch of 2 for
classifier-free guidance), MONAI's ``DDIMScheduler`` for 50 steps. The pipeline runs batched (``--batch-size``), in
``--dtype``, with each sampler at its step count. Both are timed alternately in the same process, after a warm-up,
so the ratio holds for the machine it ran on. Random weights: speed does not depend on them.

    python benchmarks/sampling.py                                    # tiny networks, CPU
    python benchmarks/sampling.py --networks reference --device cuda --dtype bf16 --images 16
"""

from __future__ import annotations

import argparse
import time

import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler

from cxr_ldm.data.tokenization import tokenize
from cxr_ldm.models.components import LDMComponents
from cxr_ldm.models.text_encoder import FrozenOpenCLIPTextEncoder
from cxr_ldm.pipelines import CXRLDMPipeline

SCHEDULE = {"num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "beta_start": 0.0015, "beta_end": 0.0205,
            "prediction_type": "v_prediction"}  # fmt: skip
NETWORKS = {
    "tiny": {
        "ae": {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [8, 16, 16], "latent_channels": 3,
               "num_res_blocks": 1, "attention_levels": [False] * 3, "with_encoder_nonlocal_attn": False,
               "with_decoder_nonlocal_attn": False, "norm_num_groups": 8},
        "unet": {"spatial_dims": 2, "in_channels": 3, "out_channels": 3, "channels": [32, 64, 64],
                 "attention_levels": [False, True, True], "num_head_channels": [0, 32, 32], "num_res_blocks": 1,
                 "norm_num_groups": 16, "with_conditioning": True, "cross_attention_dim": 64},
        "text": {"text_cfg": {"width": 64, "heads": 4, "layers": 3}, "seed": 0},
        "latent": (3, 16, 16),
    },
    "reference": {
        "ae": {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [64, 128, 128, 128],
               "latent_channels": 3, "num_res_blocks": 2, "attention_levels": [False] * 4,
               "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False, "norm_eps": 1e-6},
        "unet": {"spatial_dims": 2, "in_channels": 3, "out_channels": 3, "channels": [256, 512, 768],
                 "attention_levels": [False, True, True], "num_head_channels": [0, 512, 768], "num_res_blocks": 2,
                 "with_conditioning": True, "cross_attention_dim": 1024, "norm_eps": 1e-6},
        "text": {"model_name": "ViT-H-14", "seed": 0},
        "latent": (3, 64, 64),
    },
}  # fmt: skip


def build(kind: str) -> LDMComponents:
    spec = NETWORKS[kind]
    torch.manual_seed(0)
    return LDMComponents(
        autoencoder=AutoencoderKL(**spec["ae"]).eval(), unet=DiffusionModelUNet(**spec["unet"]).eval(),
        text_encoder=FrozenOpenCLIPTextEncoder(**spec["text"]), schedule=dict(SCHEDULE), scale_factor=0.3,
        latent_shape=spec["latent"], configs={"autoencoder": spec["ae"], "unet": spec["unet"], "text_encoder": spec["text"]},
    )  # fmt: skip


@torch.no_grad()
def bundle_loop(c: LDMComponents, prompt: str, device: torch.device, steps: int = 50) -> torch.Tensor:
    """The bundle's sampler: fp32, [uncond, cond] for one image, MONAI DDIM, decode latents / 0.3."""
    scheduler = DDIMScheduler(**SCHEDULE, clip_sample=False)
    scheduler.set_timesteps(steps)
    context = c.text_encoder(tokenize(["", prompt]).to(device))
    x = torch.randn((1, *c.latent_shape), device=device)
    for t in scheduler.timesteps:
        out = c.unet(torch.cat([x] * 2), timesteps=torch.full((2,), int(t), device=device), context=context)
        uncond, cond = out.chunk(2)
        x, _ = scheduler.step(uncond + 7.0 * (cond - uncond), int(t), x)
    return c.autoencoder.decode_stage_2_outputs(x / 0.3)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", choices=list(NETWORKS), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--images", type=int, default=8, help="images per timed run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--runs", default="ddim:50,dpm++2m:20,unipc:20,dpm++2m:15", help="sampler:steps,...")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    components = build(args.networks)
    pipe = CXRLDMPipeline(components).to(device, torch.bfloat16 if args.dtype == "bf16" else torch.float32)
    prompts = ["Large right pleural effusion."] * args.images
    runs = [(r.split(":")[0], int(r.split(":")[1])) for r in args.runs.split(",")]

    def time_bundle() -> float:
        pipe.to(device, torch.float32)
        sync(device)
        start = time.perf_counter()
        for prompt in prompts:
            bundle_loop(components, prompt, device)
        sync(device)
        rate = len(prompts) / (time.perf_counter() - start)
        pipe.to(device, torch.bfloat16 if args.dtype == "bf16" else torch.float32)
        return rate

    def time_pipe(sampler: str, steps: int) -> float:
        sync(device)
        start = time.perf_counter()
        pipe(prompts, sampler=sampler, num_inference_steps=steps, batch_size=args.batch_size, progress=False)
        sync(device)
        return len(prompts) / (time.perf_counter() - start)

    bundle_loop(components, prompts[0], device, steps=2)  # warm-up
    pipe(prompts[:2], num_inference_steps=2, progress=False)
    results: dict[str, list[float]] = {"bundle loop (ddim 50, fp32, batch 1)": []}
    for _ in range(args.repeats):  # alternate baseline and pipeline so drift hits both
        results["bundle loop (ddim 50, fp32, batch 1)"].append(time_bundle())
        for sampler, steps in runs:
            results.setdefault(f"pipeline {sampler} {steps} ({args.dtype}, batch {args.batch_size})", []).append(
                time_pipe(sampler, steps)
            )
    base = max(results["bundle loop (ddim 50, fp32, batch 1)"])
    print(f"networks={args.networks} device={device} images={args.images} repeats={args.repeats} (best of repeats)")
    print("| run | images/s | vs bundle loop |\n| --- | --- | --- |")
    for name, rates in results.items():
        print(f"| {name} | {max(rates):.3f} | {max(rates) / base:.2f}x |")


if __name__ == "__main__":
    main()

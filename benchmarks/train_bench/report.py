"""The benchmark's results: medians and ratios per side, MFU, and the printed table."""

from __future__ import annotations

import platform
import statistics
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from .flops import frozen_flops, gpu_peak_tflops, unet_training_flops


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


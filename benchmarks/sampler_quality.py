"""Quality against steps for every sampler, on one model: which sampler reaches DDIM-50 quality soonest.

For each (sampler, steps) the same prompts and seeds are sampled and compared with a 250-step DDIM sample of
the same seed (mean and 99th-percentile absolute pixel difference, images in 0..1), and scored for prompt
adherence by the phantom classifier (accuracy on the findings the prompts name). A row "matches DDIM-50" when
its distance to DDIM-250 is at most DDIM-50's and its adherence is within ``--tolerance`` of DDIM-50's.

    python benchmarks/sampler_quality.py --model demo/ldm.ckpt --data-dir demo/data/phantom/prepared_2000_64

Prints a markdown table (and writes it with the raw numbers to ``--out`` as JSON). CPU or GPU (``--device``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cxr_ldm.metrics.adherence import expected_matrix, load_phantom_judge, score_against_labels
from cxr_ldm.metrics.sources import phantom_raw_dir, phantom_raw_size
from cxr_ldm.pipelines import CXRLDMPipeline

PROMPTS = [
    "No acute cardiopulmonary process.",
    "Large right pleural effusion.",
    "Large left pleural effusion.",
    "Moderate cardiomegaly.",
    "Large right pneumothorax.",
]
GRID = {
    "ddim": [10, 20, 50, 100],
    "dpm++2m": [10, 15, 20, 30],
    "unipc": [10, 15, 20],
    "euler": [20, 50],
    "pndm": [20, 50],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="ldm.ckpt, exported folder or MONAI bundle")
    parser.add_argument("--data-dir", required=True, help="the prepared phantom folder (for the adherence judge)")
    parser.add_argument("--n-per-prompt", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--reference-steps", type=int, default=250)
    parser.add_argument("--tolerance", type=float, default=0.02, help="adherence slack against DDIM-50")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "cxr_ldm"))
    parser.add_argument("--out", default=None, help="write the table and numbers as JSON here")
    args = parser.parse_args()

    pipe = CXRLDMPipeline.load(args.model).to(args.device)
    prompts = [p for p in PROMPTS for _ in range(args.n_per_prompt)]
    seeds = list(range(len(prompts)))
    side = int(pipe.latent_shape[-1]) * 2 ** (len(pipe.components.configs["autoencoder"]["channels"]) - 1)
    raw = phantom_raw_dir(args.data_dir)
    judge, _ = load_phantom_judge(side, {}, phantom_raw_size(raw) if raw else None, args.cache_dir, progress=False)
    expected = expected_matrix(judge, prompts)
    named = ~np.isnan(expected).all(axis=1)

    def sample(sampler: str, steps: int) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        images = pipe(prompts, seeds=seeds, sampler=sampler, num_inference_steps=steps, guidance_scale=args.guidance,
                      batch_size=args.batch_size, progress=False)  # fmt: skip
        return images, time.perf_counter() - start

    def adherence(images: torch.Tensor) -> float:
        scores = judge.scores(images[torch.as_tensor(np.flatnonzero(named))]).numpy()
        return float(score_against_labels(judge.concepts, scores, expected[named])["mean_accuracy"])

    reference, ref_seconds = sample("ddim", args.reference_steps)
    rows = [{"sampler": "ddim", "steps": args.reference_steps, "mean_abs_diff": 0.0, "p99_abs_diff": 0.0,
             "adherence": adherence(reference), "seconds": ref_seconds}]  # fmt: skip
    for sampler, steps_list in GRID.items():
        for steps in steps_list:
            images, seconds = sample(sampler, steps)
            diff = (images - reference).abs()
            rows.append({"sampler": sampler, "steps": steps, "mean_abs_diff": float(diff.mean()),
                         "p99_abs_diff": float(diff.flatten().quantile(0.99)), "adherence": adherence(images),
                         "seconds": seconds})  # fmt: skip
            print(f"{sampler:8s} {steps:4d}  {rows[-1]['mean_abs_diff']:.4f}  {rows[-1]['adherence']:.3f}", flush=True)
    ddim50 = next(r for r in rows if r["sampler"] == "ddim" and r["steps"] == 50)
    for row in rows:
        row["matches_ddim50"] = bool(row["mean_abs_diff"] <= ddim50["mean_abs_diff"] + 1e-9
                                     and row["adherence"] >= ddim50["adherence"] - args.tolerance)  # fmt: skip
    candidates = [r for r in rows if r["matches_ddim50"] and r["steps"] < 50]
    best = min(candidates, key=lambda r: (r["steps"], r["mean_abs_diff"])) if candidates else None

    lines = [
        f"| sampler | steps | mean abs diff to DDIM-{args.reference_steps} | p99 abs diff | adherence | seconds | matches DDIM-50 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['mean_abs_diff']:.4f} | {r['p99_abs_diff']:.3f} | "
                     f"{r['adherence']:.3f} | {r['seconds']:.1f} | {'yes' if r['matches_ddim50'] else ''} |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    print(f"fastest sampler matching DDIM-50: {best['sampler']} with {best['steps']} steps" if best else
          "no sampler below 50 steps matched DDIM-50")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps({"model": str(args.model), "n_images": len(prompts), "prompts": PROMPTS,
                                              "guidance": args.guidance, "device": args.device, "rows": rows,
                                              "best": best, "table": table}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

"""Does the demo model draw what its prompt names? Each finding's rate under its prompt against the empty prompt.

For each prompt that names one finding, ``--n`` images are sampled with it and ``--n`` with the empty prompt, at
the same seeds, and the phantom judge (the CNN trained on rendered phantom images, as ``evaluate``'s adherence
uses it) says whether each shows the finding (score > 0.5). The table gives both rates with Wilson 95 %
intervals (scipy's ``binomtest(...).proportion_ci``). Laterality is paired: at each seed the right- and the
left-effusion prompt are drawn from the same noise, and the image of each is judged on both sides; McNemar's
exact test (a binomial test on the seeds where exactly one of the two prompts gives a right-sided effusion)
says whether the side follows the prompt. ``--figure`` writes the first seeds' pairs with the judge's scores.

    python benchmarks/demo_adherence.py --model demo/ldm.ckpt --data-dir demo/data/phantom/prepared_2000_64 \\
        --n 100 --figure docs/demo_laterality.png --out demo/adherence.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binomtest

from cxr_ldm.metrics.adherence import load_phantom_judge
from cxr_ldm.metrics.sources import phantom_raw_dir, phantom_raw_size
from cxr_ldm.pipelines import CXRLDMPipeline
from cxr_ldm.utils.figures import captioned_panels, stack_rows

# prompt -> the phantom column it names
PROMPTS = {
    "Large right pleural effusion.": "pleural_effusion_right",
    "Large left pleural effusion.": "pleural_effusion_left",
    "Moderate cardiomegaly.": "cardiomegaly",
    "Large right pneumothorax.": "pneumothorax_right",
}
RIGHT, LEFT = "Large right pleural effusion.", "Large left pleural effusion."


def rate(hits: np.ndarray) -> dict[str, float]:
    """Share of ``hits`` with its Wilson 95 % interval."""
    k, n = int(hits.sum()), int(hits.size)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"k": k, "n": n, "rate": k / n, "low": float(ci.low), "high": float(ci.high)}


def mcnemar(first: np.ndarray, second: np.ndarray) -> dict[str, float]:
    """Exact McNemar test of paired yes/no outcomes: the discordant pairs, binomial at 1/2."""
    only_first, only_second = int((first & ~second).sum()), int((~first & second).sum())
    n = only_first + only_second
    p = float(binomtest(only_first, n, 0.5).pvalue) if n else 1.0
    return {"only_first": only_first, "only_second": only_second, "p_value": p}


def fmt(r: dict[str, float]) -> str:
    return f"{r['rate']:.2f} [{r['low']:.2f}, {r['high']:.2f}] ({r['k']}/{r['n']})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the demo's ldm.ckpt (or an exported folder)")
    p.add_argument("--data-dir", required=True, help="the demo's prepared phantom folder (for the judge)")
    p.add_argument("--n", type=int, default=100, help="images per prompt (and for the empty prompt)")
    p.add_argument("--sampler", default=None, help="default: the model's")
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--guidance", type=float, default=None, help="default: the model's")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "cxr_ldm"))
    p.add_argument("--figure", type=Path, default=None, help="write the paired laterality figure here (PNG)")
    p.add_argument("--figure-pairs", type=int, default=6)
    p.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = p.parse_args()

    start = time.perf_counter()
    pipe = CXRLDMPipeline.load(args.model)
    side = int(pipe.latent_shape[-1]) * 2 ** (len(pipe.components.configs["autoencoder"]["channels"]) - 1)
    raw = phantom_raw_dir(args.data_dir)
    judge, _ = load_phantom_judge(side, {}, phantom_raw_size(raw) if raw else None, args.cache_dir, progress=False)
    seeds = list(range(args.n))
    options = {k: v for k, v in (("sampler", args.sampler), ("num_inference_steps", args.steps),
                                 ("guidance_scale", args.guidance)) if v is not None}  # fmt: skip

    def judged(prompt: str) -> tuple[torch.Tensor, np.ndarray]:
        images = pipe([prompt] * args.n, seeds=seeds, batch_size=args.batch_size, progress=False, **options)
        return images, judge.scores(images).numpy()

    empty_images, empty = judged("")
    results: dict[str, dict] = {}
    images: dict[str, torch.Tensor] = {}
    scores: dict[str, np.ndarray] = {}
    for prompt, column in PROMPTS.items():
        images[prompt], scores[prompt] = judged(prompt)
        c = judge.concepts.index(column)
        results[prompt] = {"column": column, "prompt": rate(scores[prompt][:, c] > 0.5), "empty": rate(empty[:, c] > 0.5)}
    right, left = judge.concepts.index("pleural_effusion_right"), judge.concepts.index("pleural_effusion_left")
    laterality = {
        "right_effusion_seen": {"right prompt": rate(scores[RIGHT][:, right] > 0.5), "left prompt": rate(scores[LEFT][:, right] > 0.5)},
        "left_effusion_seen": {"right prompt": rate(scores[RIGHT][:, left] > 0.5), "left prompt": rate(scores[LEFT][:, left] > 0.5)},
        "mcnemar_right_side": mcnemar(scores[RIGHT][:, right] > 0.5, scores[LEFT][:, right] > 0.5),
        "mcnemar_left_side": mcnemar(scores[LEFT][:, left] > 0.5, scores[RIGHT][:, left] > 0.5),
        "side_follows_prompt_in_both": rate((scores[RIGHT][:, right] > 0.5) & (scores[RIGHT][:, left] <= 0.5)
                                            & (scores[LEFT][:, left] > 0.5) & (scores[LEFT][:, right] <= 0.5)),
    }  # fmt: skip

    lines = ["| prompt | judged finding | rate with the prompt [95 % CI] | rate with the empty prompt [95 % CI] |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    for prompt, res in results.items():
        lines.append(f"| {prompt} | {res['column']} | {fmt(res['prompt'])} | {fmt(res['empty'])} |")
    lines += ["", "| effusion seen (judge) | right-effusion prompt | left-effusion prompt | McNemar exact p |",
              "| --- | --- | --- | --- |",
              f"| right side | {fmt(laterality['right_effusion_seen']['right prompt'])} | "
              f"{fmt(laterality['right_effusion_seen']['left prompt'])} | {laterality['mcnemar_right_side']['p_value']:.2g} |",
              f"| left side | {fmt(laterality['left_effusion_seen']['right prompt'])} | "
              f"{fmt(laterality['left_effusion_seen']['left prompt'])} | {laterality['mcnemar_left_side']['p_value']:.2g} |",
              "", f"seeds where each prompt shows its own side only: {fmt(laterality['side_follows_prompt_in_both'])}"]  # fmt: skip
    table = "\n".join(lines)
    seconds = time.perf_counter() - start
    print(table)
    print(f"{args.n} seeds x {len(PROMPTS) + 1} prompts in {seconds:.0f} s")

    if args.figure:
        rows = []
        for s in range(min(args.figure_pairs, args.n)):
            panels = [images[RIGHT][s, 0].numpy(), images[LEFT][s, 0].numpy(), empty_images[s, 0].numpy()]
            captions = [f"seed {s}, right-effusion prompt: judge R {scores[RIGHT][s, right]:.2f} L {scores[RIGHT][s, left]:.2f}",
                        f"seed {s}, left-effusion prompt: judge R {scores[LEFT][s, right]:.2f} L {scores[LEFT][s, left]:.2f}",
                        f"seed {s}, empty prompt: judge R {empty[s, right]:.2f} L {empty[s, left]:.2f}"]  # fmt: skip
            rows.append(captioned_panels(panels, captions, panel_size=160, chars_per_line=26))
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        stack_rows(rows).save(args.figure)
        print(f"figure: {args.figure}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": str(args.model), "n": args.n, "options": options, "judge": judge.name,
                                        "results": results, "laterality": laterality, "table": table,
                                        "seconds": seconds}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

"""Images/s of ``prepare`` on phantom studies, and of building the stage-2 latent cache from its output.

``prepare`` (``cxr_ldm.data.preparation.prepare_dataset``) is timed on a phantom tree in MIMIC's layout (generated
first, untimed): a first run that decodes, resizes and writes every image, then a re-run that finds them all done.
``--latent-cache`` then times ``ensure_latent_cache`` on the prepared train split with a random-weight autoencoder
of the chosen size (``tiny``: ``aekl_small``; ``reference``: the published 4.6 M-parameter AE), on ``--device``:
what the first ``data.latent_cache=true`` run spends before training. ``--synthetic N`` skips the phantom tree
and ``prepare`` and times the cache build on N synthetic images written straight in prepare's output format (for
machines without scipy, which the phantom renderer needs).

    python benchmarks/prepare.py --studies 500 --raw-size 256 --size 256 --workers 2
    python benchmarks/prepare.py --studies 2000 --size 512 --workers 16 --latent-cache reference --device cuda
    python benchmarks/prepare.py --synthetic 1024 --size 512 --latent-cache reference --device cuda
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_ldm.data.latent_cache import ensure_latent_cache  # noqa: E402

AUTOENCODERS = {
    "tiny": {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [16, 32, 32], "latent_channels": 3,
             "num_res_blocks": 1, "attention_levels": [False] * 3, "with_encoder_nonlocal_attn": False,
             "with_decoder_nonlocal_attn": False, "norm_num_groups": 8},
    "reference": {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "channels": [64, 128, 128, 128],
                  "latent_channels": 3, "num_res_blocks": 2, "attention_levels": [False] * 4,
                  "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False, "norm_num_groups": 32},
}  # fmt: skip


def write_synthetic(out: Path, n: int, size: int) -> None:
    """``out/train.csv`` and ``n`` 8-bit PNGs (blobs and noise) in the layout ``prepare`` writes."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    (out / "images").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    rows = []
    for i in range(n):
        cx, cy, r = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.2, 0.6)
        image = 0.2 + 0.7 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2) + 0.05 * rng.random((size, size))
        name = f"images/syn{i:06d}.png"
        Image.fromarray((255 * image.clip(0, 1)).astype(np.uint8)).save(out / name)
        rows.append({"dicom_id": f"syn{i:06d}", "image": name, "sentences": json.dumps(["No acute process."])})
    pd.DataFrame(rows).to_csv(out / "train.csv", index=False)


def prepare_rows(args: argparse.Namespace, raw: Path, out: Path) -> tuple[dict, str]:
    """``prepare`` timed on a phantom tree generated first (untimed): a first run, then a re-run."""
    from cxr_ldm.data.preparation import prepare_dataset
    from cxr_ldm.phantom.studies import generate_phantom

    generated = generate_phantom(raw, n_studies=args.studies, size=args.raw_size, num_workers=args.workers, progress=False)
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    first = prepare_dataset(raw, raw / "reports", out, size=args.size, num_workers=args.workers, progress=False)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    again = prepare_dataset(raw, raw / "reports", out, size=args.size, num_workers=args.workers, progress=False)
    again_s = time.perf_counter() - start
    rows = {
        "prepare (first run)": {"images": first.kept, "seconds": first_s, "images_per_s": first.kept / first_s},
        "prepare (re-run, all reused)": {"images": again.kept, "seconds": again_s, "images_per_s": again.kept / again_s},
    }  # fmt: skip
    return rows, f"phantom studies={args.studies} ({generated['n_images']} JPEGs at {args.raw_size} px)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--studies", type=int, default=500)
    p.add_argument("--raw-size", type=int, default=256, help="shorter side of the generated JPEGs")
    p.add_argument("--size", type=int, default=256, help="prepare's output size (shorter side)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--latent-cache", choices=["tiny", "reference"], default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32, help="latent cache: images per encoder batch")
    p.add_argument("--synthetic", type=int, default=None, help="no phantom/prepare: N synthetic prepared images")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cxr_ldm_prepare_"))
    raw, out = work / "raw", work / "prepared"

    if args.synthetic:
        write_synthetic(out, args.synthetic, args.size)
        rows, source = {}, f"{args.synthetic} synthetic prepared images"
    else:
        rows, source = prepare_rows(args, raw, out)

    if args.latent_cache:
        from monai.networks.nets import AutoencoderKL

        device = torch.device(args.device)
        torch.manual_seed(0)
        arch = AUTOENCODERS[args.latent_cache]
        ae = AutoencoderKL(**arch).to(device).eval()
        kw = dict(shard_size=1024, batch_size=args.batch_size, num_workers=args.workers, progress=False)
        start = time.perf_counter()
        store = ensure_latent_cache(out, "train", args.size, ae, arch, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        ensure_latent_cache(out, "train", args.size, ae, arch, **kw)  # found: only the key is computed
        found_s = time.perf_counter() - start
        rows[f"latent cache build ({args.latent_cache} AE, {args.device})"] = {
            "images": len(store), "seconds": build_s, "images_per_s": len(store) / build_s}  # fmt: skip
        rows["latent cache found (key only)"] = {"images": len(store), "seconds": found_s,
                                                 "images_per_s": len(store) / found_s}  # fmt: skip

    print(f"{source}, size={args.size}, workers={args.workers}, torch threads={torch.get_num_threads()}")
    print("| step | images | seconds | images/s |\n| --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['images']} | {r['seconds']:.2f} | {r['images_per_s']:.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

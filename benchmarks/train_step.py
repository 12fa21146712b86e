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
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # cxr_ldm from this checkout; the parts in train_bench/

from train_bench.batches import Batches, loader  # noqa: E402
from train_bench.configs import compose_config, write_weight_files  # noqa: E402
from train_bench.flops import frozen_flops, read_arch, unet_training_flops  # noqa: E402
from train_bench.ours import Ours  # noqa: E402
from train_bench.plain_aekl import PlainAEKL  # noqa: E402
from train_bench.plain_ldm import PlainLDM  # noqa: E402
from train_bench.report import print_report, summarise  # noqa: E402
from train_bench.timing import Timing, Window  # noqa: E402


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



if __name__ == "__main__":
    main()

"""Stage-2 training steps on CPUs at each torch thread count, alone and beside other busy processes.

What ``cpu_threads=auto`` (cxr_ldm/utils/cpu_threads.py) rests on: on cores another process keeps busy, a run
with one thread per core waits at every parallel region for the thread that lost its core. The step is the demo's
stage 2 (``conf/model/ldm_small.yaml``'s UNet: forward + backward + AdamW on a batch of 16 latents of 3 x 16 x 16,
what 64 px images give) in this process; the other load is ``--busy`` processes each spinning one thread of
matrix products. Each setting is timed for ``--steps`` steps after ``--warmup``, settings alternated over
``--rounds``; the table gives the median seconds per step and the ratio to the fastest setting of the same load.
``auto`` is what the option picks in that situation (it reads the load average, so it is the pick after the busy
processes ran a minute: the table shows it from the rule, with the busy processes counted as load).

    python benchmarks/cpu_threads.py --busy 0,1 --rounds 3
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_ldm.utils.cpu_threads import choose_cpu_threads, usable_cores  # noqa: E402


def spin(stop: Any) -> None:
    """One busy core: single-threaded matrix products until told to stop."""
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def build_step() -> Any:
    from hydra import compose, initialize_config_dir
    from monai.networks.nets import DiffusionModelUNet
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=ldm_phantom"])
    unet_kwargs = OmegaConf.to_container(cfg.model.unet, resolve=True)
    torch.manual_seed(0)
    unet = DiffusionModelUNet(**unet_kwargs)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    batch = int(cfg.data.batch_size)
    x = torch.randn(batch, unet_kwargs["in_channels"], 16, 16)
    t = torch.randint(0, 1000, (batch,))
    context = torch.randn(batch, 77, unet_kwargs["cross_attention_dim"])

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(unet(x, timesteps=t, context=context), x).backward()
        opt.step()

    return step


def time_steps(step: Any, threads: int, warmup: int, steps: int) -> float:
    torch.set_num_threads(threads)
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--busy", default="0,1", help="comma list: how many busy processes beside the run")
    p.add_argument("--threads", default=None, help="comma list of thread counts (default 1..usable cores)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    cores = usable_cores()
    counts = [int(n) for n in args.threads.split(",")] if args.threads else list(range(1, cores + 1))
    step = build_step()
    ctx = mp.get_context("spawn")
    print(f"torch {torch.__version__}, {cores} usable cores; {args.steps} steps x {args.rounds} rounds "
          f"(warm-up {args.warmup}) per setting")  # fmt: skip
    print("| busy processes | threads | s per step (median) | per round | / fastest at this load | auto picks |")
    print("| --- | --- | --- | --- | --- | --- |")
    for busy in [int(b) for b in args.busy.split(",")]:
        stop = ctx.Event()
        spinners = [ctx.Process(target=spin, args=(stop,), daemon=True) for _ in range(busy)]
        for s in spinners:
            s.start()
        time.sleep(2.0 if busy else 0.0)  # let them get going
        per_round: dict[int, list[float]] = {n: [] for n in counts}
        for _ in range(args.rounds):
            for n in counts:
                per_round[n].append(time_steps(step, n, args.warmup, args.steps))
        stop.set()
        for s in spinners:
            s.join(timeout=10)
        medians = {n: statistics.median(v) for n, v in per_round.items()}
        fastest = min(medians.values())
        auto = choose_cpu_threads("auto", cores=cores, load=float(busy), environ={}).threads
        for n in counts:
            rounds = ", ".join(f"{v:.3f}" for v in per_round[n])
            print(f"| {busy} | {n} | {medians[n]:.3f} | {rounds} | {medians[n] / fastest:.2f} | "
                  f"{'yes' if n == auto else ''} |")  # fmt: skip


if __name__ == "__main__":
    main()

"""Seconds per epoch of the demo's stage 2 (``experiment=ldm_phantom``) with and without the latent cache.

Runs the real command, ``python -m cxr_ldm.train experiment=ldm_phantom model.autoencoder_ckpt=...``, as the demo
does (2,000 phantom studies at 64 px, generated on first use under ``--data``), alternately without and with
``data.latent_cache=true``, ``--rounds`` times for ``--epochs`` epochs each. Each epoch is timed by a callback
(this module's ``EpochTimer``, training and validation included); the first epoch of every run is left out
(start-up, and the cache build in the first cached run, reported on its own). The autoencoder is a random-weight
``aekl_small`` checkpoint: speed does not depend on the weights.

    python benchmarks/phantom_stage2.py --epochs 3 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]


class EpochTimer(L.Callback):
    """Wall-clock seconds of every epoch (training + validation), written to ``out`` as JSON at the end."""

    def __init__(self, out: str) -> None:
        self.out, self.seconds, self._start = Path(out), [], 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self._start:
            self.seconds.append(time.perf_counter() - self._start)
            self._start = 0.0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start and not trainer.enable_validation:  # epochs without validation end here
            self.seconds.append(time.perf_counter() - self._start)
            self._start = 0.0

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.out.write_text(json.dumps(self.seconds))


def write_autoencoder(path: Path) -> None:
    import torch
    from hydra import compose, initialize_config_dir
    from monai.networks.nets import AutoencoderKL
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        arch = OmegaConf.to_container(compose(config_name=None, overrides=["+model=aekl_small"]).model.autoencoder)
    torch.manual_seed(0)
    state = {f"autoencoder.{k}": v for k, v in AutoencoderKL(**arch).state_dict().items()}
    torch.save({"hyper_parameters": {"autoencoder": arch}, "state_dict": state}, path)


def run(args: argparse.Namespace, work: Path, name: str, cache: bool, index: int) -> dict:
    out = work / f"{name}_{index}.json"
    command = [
        sys.executable, "-m", "cxr_ldm.train", "experiment=ldm_phantom", f"paths.data_dir={args.data}",
        f"hydra.run.dir={work / f'run_{name}_{index}'}", f"model.autoencoder_ckpt={work / 'aekl.ckpt'}",
        f"trainer.max_epochs={args.epochs}", f"data.latent_cache={str(cache).lower()}", "print_config=false",
        f"data.latent_cache_dir={work / 'latent_cache'}",
        *([f"trainer.limit_train_batches={args.limit_train_batches}"] if args.limit_train_batches else []),
        "+callbacks.epoch_timer._target_=phantom_stage2.EpochTimer", f"+callbacks.epoch_timer.out={out}",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", WANDB_MODE="offline")  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} run failed:\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, "epochs_s": json.loads(out.read_text())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--limit-train-batches", type=int, default=None, help="shorter epochs (the demo's: 110 batches)")
    p.add_argument("--data", type=Path, default=REPO / "data", help="paths.data_dir (phantom data made on first use)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cxr_ldm_phantom_stage2_"))
    write_autoencoder(work / "aekl.ckpt")
    runs: dict[str, list[dict]] = {"online encoding": [], "latent cache": []}
    for index in range(args.rounds):
        for name, cache in (("online encoding", False), ("latent cache", True)):
            runs[name].append(run(args, work, name.replace(" ", "_"), cache, index))
    batches = args.limit_train_batches or "all"
    print(f"experiment=ldm_phantom, {args.epochs} epochs ({batches} training batches + validation) x {args.rounds} rounds, "
          f"alternating; first epoch of each run left out (cache build in the first cached run)")  # fmt: skip
    print("| stage 2 | s per epoch (median of later epochs) | first epoch s | run wall s |\n| --- | --- | --- | --- |")
    summary = {}
    for name, results in runs.items():
        later = [s for r in results for s in r["epochs_s"][1:]]
        firsts = ", ".join(f"{r['epochs_s'][0]:.1f}" for r in results)
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in results)
        summary[name] = statistics.median(later)
        print(f"| {name} | {summary[name]:.2f} | {firsts} | {walls} |")
    print(f"online / cache per epoch: {summary['online encoding'] / summary['latent cache']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median_epoch_s": summary}, indent=2))


if __name__ == "__main__":
    main()

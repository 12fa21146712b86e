"""Test instrument loaded into training runs (``+callbacks.rank_probe._target_=rank_probe.RankProbe``).

Each rank writes ``<out_dir>/rank<r>.pt``: its weights before training and after every recorded step, the
batches it trained on and the global RNG state at the start of each of those steps (what its noise was drawn
from). The DDP tests compare ranks with each other and with a single-process computation on the global batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


def _state(module: LightningModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class RankProbe(Callback):
    def __init__(self, out_dir: str, record_steps: int = 3) -> None:
        self.out_dir = Path(out_dir)
        self.record_steps = record_steps
        self.initial: dict[str, torch.Tensor] = {}
        self.steps: list[dict[str, Any]] = []
        self.seen_ids: list[str] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.initial = _state(pl_module)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.seen_ids.extend(batch["dicom_id"])
        if len(self.steps) < self.record_steps:
            self.steps.append(
                {
                    "rng": torch.get_rng_state(),
                    "image": batch["image"].detach().clone(),
                    "tokens": batch["tokens"].detach().clone(),
                    "dicom_id": list(batch["dicom_id"]),
                }
            )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.steps and "after" not in self.steps[-1]:
            self.steps[-1]["after"] = _state(pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "global_step": trainer.global_step,
                "initial": self.initial,
                "steps": self.steps,
                "final": _state(pl_module),
                "seen_ids": self.seen_ids,
            },
            self.out_dir / f"rank{trainer.global_rank}.pt",
        )

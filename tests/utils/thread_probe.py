"""A callback for training runs started by the tests: writes torch's intra-op thread count as the steps see it."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


class ThreadProbe(L.Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, *args) -> None:
        self.path.write_text(json.dumps({"threads": torch.get_num_threads()}))

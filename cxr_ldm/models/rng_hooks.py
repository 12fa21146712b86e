"""The LightningModule hooks that make a resumed fit draw the noise an uninterrupted one would (utils/rng.py).

Every rank's RNG states go into each checkpoint; on resume they are held until fitting starts (never applied by
``load_from_checkpoint``) and each rank gets its own back at the first hook where that makes the run exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cxr_ldm.utils.rng import RNG_KEY, checkpoint_rng_states, resume_rng_states


class ResumableRNGHooks:
    """Mixed into both stages' LightningModules (before ``LightningModule`` in the bases). A module that also
    edits the checkpoint in ``on_save_checkpoint`` calls ``super().on_save_checkpoint(checkpoint)``."""

    _rng_states_to_restore: Mapping[str, Any] | None = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = checkpoint_rng_states(self._trainer)  # every rank's

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # applied in the hooks below, i.e. only when fitting resumes (never by load_from_checkpoint)
        self._rng_states_to_restore = checkpoint.get(RNG_KEY)

    def on_fit_start(self) -> None:
        resume_rng_states(self, "fit_start")  # this rank's own, when it makes resume exact

    def on_train_epoch_start(self) -> None:
        resume_rng_states(self, "train_epoch_start")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        resume_rng_states(self, "train_batch_start")

"""The LightningModule hooks that make a resumed fit continue the run it resumes, mid-epoch included.

Three kinds of state belong to each rank and are lost from a checkpoint that only rank zero writes
(``utils/rank_states.py``): the RNG states (``utils/rng.py``); the training DataLoader's position, which
Lightning keeps for a stateful loader (``StatefulDataLoader``: sampler order, batches served, the dataset's own
generator); and the partial sums of the epoch means logged during training (:func:`epoch_mean`). Every rank's
are gathered into each checkpoint; on resume each rank gets its own back: the RNG states at the first hook
where that makes the run exact (never by ``load_from_checkpoint``), the loader position before Lightning's
loops read it (Lightning loads it only into a run resumed mid-epoch), the epoch means before the first resumed batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchmetrics import MeanMetric, Metric

from cxr_ldm.utils.rank_states import gather_rank_values, own_rank_value
from cxr_ldm.utils.rng import RNG_KEY, checkpoint_rng_states, epoch_has_ended, resume_rng_states

LOADER_KEY = "cxr_ldm_loader_states"  # every rank's checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
EPOCH_MEANS_KEY = "cxr_ldm_epoch_means"  # every rank's partial epoch means, when saved mid-epoch


def epoch_mean() -> MeanMetric:
    """A training epoch mean that a mid-epoch resume continues (logged with ``self.log(name, metric)``; NaN
    kept, as Lightning's own mean keeps it). Under DDP its epoch value is the mean over every rank's batches."""
    return MeanMetric(nan_strategy="disable")


def _fit_loop_state(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    return checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})


def _metric_states(metric: Metric) -> dict[str, Any]:
    return {"states": {name: getattr(metric, name).detach().cpu() for name in metric._defaults},
            "update_count": metric._update_count}  # fmt: skip


def _set_metric_states(metric: Metric, saved: Mapping[str, Any]) -> None:
    for name, value in saved["states"].items():
        setattr(metric, name, value.to(metric.device))
    metric._update_count = saved["update_count"]
    metric._computed = None


class ResumableFitHooks:
    """Mixed into both stages' LightningModules (before ``LightningModule`` in the bases). A module that also
    edits the checkpoint in ``on_save_checkpoint`` calls ``super().on_save_checkpoint(checkpoint)``."""

    _rng_states_to_restore: Mapping[str, Any] | None = None

    def _epoch_means(self) -> dict[str, Metric]:
        return {name: m for name, m in self.named_modules() if isinstance(m, MeanMetric)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = self._trainer
        checkpoint[RNG_KEY] = checkpoint_rng_states(trainer)  # every rank's
        loop_state = _fit_loop_state(checkpoint)
        if "combined_loader" in loop_state:
            checkpoint[LOADER_KEY] = gather_rank_values(trainer, loop_state["combined_loader"])
        if trainer is not None and not epoch_has_ended(trainer):  # at an epoch's end the next one starts at 0
            means = {name: _metric_states(m) for name, m in self._epoch_means().items()}
            checkpoint[EPOCH_MEANS_KEY] = gather_rank_values(trainer, means)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainer = self._trainer
        # applied in the hooks below, i.e. only when fitting resumes (never by load_from_checkpoint)
        self._rng_states_to_restore = checkpoint.get(RNG_KEY)
        loop_state = _fit_loop_state(checkpoint)
        own = own_rank_value(checkpoint.get(LOADER_KEY), trainer, "the training DataLoader's position")
        if own is not None:  # Lightning's loops read it after this hook, from this very dict
            loop_state["combined_loader"] = own
        means = own_rank_value(checkpoint.get(EPOCH_MEANS_KEY), trainer, "the epoch means") if trainer else None
        for name, metric in self._epoch_means().items():
            if means and name in means:
                _set_metric_states(metric, means[name])

    def on_fit_start(self) -> None:
        resume_rng_states(self, "fit_start")  # this rank's own, when it makes resume exact

    def on_train_epoch_start(self) -> None:
        resume_rng_states(self, "train_epoch_start")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        resume_rng_states(self, "train_batch_start")

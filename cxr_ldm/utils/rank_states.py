"""Per-rank values in a checkpoint that only rank zero writes.

Lightning builds the checkpoint dict on every rank (the ``on_save_checkpoint`` hooks run everywhere) but only
rank zero writes the file: anything a rank puts there itself (its RNG states, its DataLoader position, its part
of an epoch's mean) is rank zero's in the file, and after a resume every rank would continue rank zero's.
:func:`gather_rank_values` collects every rank's value (a collective, as the save itself) as
``{"world_size": W, "ranks": [value of rank 0, ..., rank W-1]}``; :func:`own_rank_value` gives rank ``r``
entry ``r`` back. Values must be tensors and primitives, so checkpoints still load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

log = logging.getLogger(__name__)


def rank_and_world_size(trainer: Any) -> tuple[int, int]:
    """``(global_rank, world_size)`` of a Trainer; ``(0, 1)`` without one (``load_from_checkpoint``)."""
    if trainer is None:
        return 0, 1
    return int(getattr(trainer, "global_rank", 0)), int(getattr(trainer, "world_size", 1))


def gather_rank_values(trainer: Any, value: Any) -> dict[str, Any]:
    """Every rank's ``value``, for the checkpoint dict. Under DDP a collective: every rank must call it."""
    _, world_size = rank_and_world_size(trainer)
    if world_size <= 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return {"world_size": 1, "ranks": [value]}
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, value)
    return {"world_size": world_size, "ranks": gathered}


def own_rank_value(saved: Mapping[str, Any] | None, trainer: Any, what: str) -> Any | None:
    """This rank's entry of :func:`gather_rank_values`'s output; ``None`` when there is none (a warning names
    ``what`` when the checkpoint was written by another number of ranks)."""
    if not saved or "ranks" not in saved:
        return None
    rank, world_size = rank_and_world_size(trainer)
    ranks = saved["ranks"]
    if len(ranks) != world_size:
        log.warning("the checkpoint was written by %d rank(s), this run has %d: %s does not resume exactly",
                    len(ranks), world_size, what)  # fmt: skip
    return ranks[rank] if rank < len(ranks) else None

"""Every rank's RNG states in the checkpoint, and each rank's own back on resume.

Lightning builds the checkpoint dict on every rank (``on_save_checkpoint`` runs everywhere) but only rank
zero writes it, so RNG states put there by each rank are rank zero's in the file, and after a requeue every
rank would draw rank zero's noise. :func:`checkpoint_rng_states` gathers all ranks' states into the dict
(``{"world_size": W, "ranks": [states of rank 0, ..., rank W-1]}``; a collective, as the save itself), and
:func:`restore_checkpoint_rng_states` gives rank ``r`` entry ``r``. The states are tensors and primitives,
so checkpoints still load with ``torch.load(weights_only=True)``.

Checkpoints written before this format (one rank's states, no ``"ranks"``) restore those states on every
rank, as they always did, with a warning under DDP.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

RNG_KEY = "cxr_ldm_rng_states"


def collect_rng_states() -> dict[str, Any]:
    """This process's global RNG states (torch, numpy, python, CUDA when initialised)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": (version, list(internal), gauss),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: Mapping[str, Any]) -> None:
    """Set this process's global RNG states from :func:`collect_rng_states`'s output."""
    torch.set_rng_state(states["torch"].cpu())
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])


def _world(trainer: Any) -> tuple[int, int]:
    if trainer is None:
        return 0, 1
    return int(getattr(trainer, "global_rank", 0)), int(getattr(trainer, "world_size", 1))


def checkpoint_rng_states(trainer: Any = None) -> dict[str, Any]:
    """All ranks' RNG states, for the checkpoint dict. Under DDP a collective: every rank must call it
    (they do: Lightning builds the checkpoint on every rank)."""
    states = collect_rng_states()
    _, world_size = _world(trainer)
    if world_size <= 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return {"world_size": 1, "ranks": [states]}
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, states)
    return {"world_size": world_size, "ranks": gathered}


def restore_checkpoint_rng_states(saved: Mapping[str, Any] | None, trainer: Any = None) -> None:
    """Give this rank its own saved states (entry ``global_rank``)."""
    if not saved:
        return
    rank, world_size = _world(trainer)
    if "ranks" not in saved:  # written by an older version: one rank's states
        if world_size > 1:
            log.warning("the checkpoint holds one rank's RNG states: every rank resumes with them")
        restore_rng_states(saved)
        return
    ranks = saved["ranks"]
    if len(ranks) != world_size:
        log.warning(
            "the checkpoint was written by %d rank(s), this run has %d: random draws do not resume exactly",
            len(ranks), world_size,
        )  # fmt: skip
    if rank < len(ranks):
        restore_rng_states(ranks[rank])


def resume_rng_states(module: Any, attribute: str = "_rng_states_to_restore") -> None:
    """Apply, once, the states a module stashed in ``on_load_checkpoint`` when fitting resumes from a file.

    Call it from ``on_fit_start`` and ``on_train_start``: ``on_fit_start`` comes after the checkpoint was read
    (for DDP and single devices) and before the first training DataLoader iterator draws its seed from the
    global RNG (Lightning creates it before ``on_train_start`` when resuming; an uninterrupted run creates it
    after the moment its checkpoint was written), and the sanity check in between runs under
    ``isolate_rng``. ``on_train_start`` catches strategies that read the checkpoint after ``on_fit_start``.
    States stashed by ``load_from_checkpoint`` (no ``trainer.ckpt_path``) are dropped, never applied.
    """
    saved = getattr(module, attribute, None)
    if saved is None:
        return
    setattr(module, attribute, None)
    trainer = module.trainer
    if trainer.ckpt_path is None:
        return
    restore_checkpoint_rng_states(saved, trainer)

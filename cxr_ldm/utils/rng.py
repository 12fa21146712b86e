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
    where = {
        "global_step": int(getattr(trainer, "global_step", 0)),
        "epoch_end": _draws_a_new_iterator_before_its_next_batch(trainer),  # see resume_rng_states
    }
    if world_size <= 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return {"world_size": 1, "ranks": [states], **where}
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, states)
    return {"world_size": world_size, "ranks": gathered, **where}


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


def _draws_a_new_iterator_before_its_next_batch(trainer: Any) -> bool:
    """Whether an uninterrupted run, checkpointed now, builds a training DataLoader iterator (which draws its
    seed from the global RNG) before its next training batch: yes at the end of an epoch and after fitting."""
    try:
        epoch_loop = trainer.fit_loop.epoch_loop
        return bool(epoch_loop.batch_progress.is_last_batch or trainer.state.stage is None)
    except AttributeError:  # not a Lightning Trainer
        return False


def _epoch_loop_builds_iterator(trainer: Any) -> bool:
    """Lightning's own condition (``_TrainingEpochLoop.on_run_start``) for building a new iterator at the start
    of this epoch; otherwise the epoch uses the one ``FitLoop.setup_data`` built before ``on_train_start``."""
    fit_loop = trainer.fit_loop
    return trainer.current_epoch > 0 and not fit_loop.is_resuming and not fit_loop.epoch_loop.restarting


def resume_rng_states(module: Any, event: str, attribute: str = "_rng_states_to_restore") -> None:
    """Apply the states a module stashed in ``on_load_checkpoint`` at the moment that makes resume exact.

    Call it from the module's ``on_fit_start`` (``event="fit_start"``), ``on_train_epoch_start``
    (``"train_epoch_start"``) and ``on_train_batch_start`` (``"train_batch_start"``). A DataLoader iterator draws
    its seed from the global RNG when it is built (and a ``RandomSampler`` its permutation's at the first
    batch); a resumed Lightning run builds one in ``FitLoop.setup_data``, between ``on_fit_start`` and
    ``on_train_start`` (the sanity check before it runs under ``isolate_rng``):

    * checkpoint written mid-epoch (a signal checkpoint, ``every_n_train_steps``): the uninterrupted run goes
      on with its iterator, so the states are restored at the first resumed batch, after the resumed run
      built (and started) its own. The module's draws then match; which images that batch holds is
      Lightning's business (a plain DataLoader restarts its epoch);
    * written at the end of an epoch (``ModelCheckpoint``'s usual moment) or after fitting: the uninterrupted
      run builds a new iterator first, so the states are restored in ``on_fit_start``, before the resumed
      run builds one, and again at the start of an epoch that builds a new iterator before the first resumed
      batch (Lightning does that when the checkpoint was written after the epoch had finished).

    States stashed by ``load_from_checkpoint`` (no ``trainer.ckpt_path``) are never applied; nothing is applied
    once the resumed run has trained a step.
    """
    saved = getattr(module, attribute, None)
    if saved is None:
        return
    trainer = module.trainer
    # the loops' progress (global_step) is restored after on_fit_start
    trained = event != "fit_start" and trainer.global_step != saved.get("global_step", trainer.global_step)
    if trainer.ckpt_path is None or trained:
        setattr(module, attribute, None)
        return
    before_iterator = bool(saved.get("epoch_end", False))
    if (
        (event == "fit_start" and before_iterator)
        or (event == "train_epoch_start" and before_iterator and _epoch_loop_builds_iterator(trainer))
        or (event == "train_batch_start" and not before_iterator)
    ):
        restore_checkpoint_rng_states(saved, trainer)
    if event == "train_batch_start":
        setattr(module, attribute, None)  # done: from here on the run draws as the uninterrupted one

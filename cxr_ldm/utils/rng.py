"""Every rank's RNG states in the checkpoint, and each rank's own back on resume.

Only rank zero writes the checkpoint, so RNG states put there by each rank would be rank zero's in the file and
after a requeue every rank would draw rank zero's noise: :func:`checkpoint_rng_states` gathers all ranks'
states (``utils/rank_states.py``) and :func:`restore_checkpoint_rng_states` gives rank ``r`` entry ``r``.

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

from cxr_ldm.utils.rank_states import gather_rank_values, own_rank_value, rank_and_world_size

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


def checkpoint_rng_states(trainer: Any = None) -> dict[str, Any]:
    """All ranks' RNG states, for the checkpoint dict. Under DDP a collective: every rank must call it
    (they do: Lightning builds the checkpoint on every rank)."""
    where = {
        "global_step": int(getattr(trainer, "global_step", 0)),
        "epoch_end": epoch_has_ended(trainer),  # see resume_rng_states
    }
    return {**gather_rank_values(trainer, collect_rng_states()), **where}


def restore_checkpoint_rng_states(saved: Mapping[str, Any] | None, trainer: Any = None) -> None:
    """Give this rank its own saved states (entry ``global_rank``)."""
    if not saved:
        return
    if "ranks" not in saved:  # written by an older version: one rank's states
        if rank_and_world_size(trainer)[1] > 1:
            log.warning("the checkpoint holds one rank's RNG states: every rank resumes with them")
        restore_rng_states(saved)
        return
    own = own_rank_value(saved, trainer, "random draws")
    if own is not None:
        restore_rng_states(own)


def epoch_has_ended(trainer: Any) -> bool:
    """Whether a checkpoint written now falls between epochs (the epoch's last batch has run, or fitting is
    over): an uninterrupted run then starts its next epoch afresh, with a new DataLoader iterator (whose seed
    comes from the global RNG) and empty epoch means."""
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

"""Which validation epochs a periodic callback acts on: one rule for every callback that works "every n epochs".

Lightning validates after training epoch ``e`` (0-based) when ``(e + 1) % check_val_every_n_epoch == 0``. A
callback that asks ``current_epoch % n == 0`` on its own can miss every validation epoch (validation every 10
epochs, a callback every 5: epochs 9, 19, ... are never multiples of 5), and then a metric it logs never
exists. :func:`validation_epoch_due` decides on the epochs that do validate: a validation epoch is due when
a multiple of ``every_n_epochs`` training epochs was reached since the previous validation epoch, so every
n epochs (rounded up to the next validation) the callback acts, whatever ``check_val_every_n_epoch`` is.

Two anchors:

* ``from_first=False``: multiples of ``n`` epochs done (validation every epoch, ``n=10``: epochs 9, 19, ...,
  including the last epoch of a ``max_epochs=40`` run);
* ``from_first=True``: the first validation epoch of the run and every ``n`` epochs after it (validation
  every epoch, ``n=2``: epochs 0, 2, 4, ...); a metric logged this way exists from the first validation on,
  so a ``ModelCheckpoint`` can monitor it.

The rule depends on the epoch only (no state), so a resumed run acts on the same epochs as an uninterrupted one.
"""

from __future__ import annotations

from lightning.pytorch import Trainer


def validation_epoch_due(trainer: Trainer, every_n_epochs: int, from_first: bool = False) -> bool:
    """True at a (non sanity-check) validation whose epoch is due for a callback acting every ``every_n_epochs``."""
    if every_n_epochs < 1:
        raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
    if trainer.sanity_checking:
        return False
    step = trainer.check_val_every_n_epoch or 1  # None: validation by steps, possibly in every epoch
    done = trainer.current_epoch + 1  # training epochs finished when this validation runs
    if from_first:
        done -= step  # 0 at the first validation epoch of the run
        if done <= 0:
            return True
    return done // every_n_epochs > (done - step) // every_n_epochs

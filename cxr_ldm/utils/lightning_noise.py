"""Lightning messages a user of this project cannot act on, dropped at the logger or warning that carries them,
only while a training run builds and drives its Trainer (:func:`quiet_lightning`).

* Product tips ("💡 Tip: ... litlogger / litmodels") and the note that the configured model summary replaces the
  default one, logged at INFO on Lightning's ``rank_zero`` logger: those records are dropped, nothing else is.
* "The `srun` command is available on your system but is not used": Lightning says it on any machine with an
  ``srun`` on the PATH. Outside a SLURM allocation (no ``SLURM_JOB_ID``: a login node, a workstation with SLURM
  installed) ``srun`` would be wrong, so it is dropped there; inside an allocation it is kept (it may be right).
* "Found N module(s) in eval mode at the start of training": stage 2 keeps its frozen autoencoder and text
  encoder in eval mode on purpose.
* "`isinstance(treespec, LeafSpec)` is deprecated": Lightning's own call into torch's pytree API.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"
_DROPPED_INFO = ("💡 Tip:", "Trainer already configured with model summary callbacks")
_DROPPED_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode at the start of training",
    re.escape("`isinstance(treespec, LeafSpec)` is deprecated"),
)
_SRUN_HINT = re.escape("The `srun` command is available on your system but is not used")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_DROPPED_INFO)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """While building and running a Trainer: without the messages listed in the module docstring."""
    logger, noise = logging.getLogger(_RANK_ZERO_LOGGER), _DropNoise()
    logger.addFilter(noise)
    try:
        with warnings.catch_warnings():
            for message in _DROPPED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            if not os.environ.get("SLURM_JOB_ID"):
                warnings.filterwarnings("ignore", message=_SRUN_HINT)
            yield
    finally:
        logger.removeFilter(noise)

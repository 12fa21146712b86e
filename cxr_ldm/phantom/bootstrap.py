"""First-use creation of the phantom dataset, so phantom experiments run on a fresh checkout.

The training config injects it into the DataModule: ``data.phantom`` (``conf/data/phantom.yaml``) is a Hydra
partial of :func:`ensure_phantom_prepared`, which the DataModule's ``prepare_data`` calls with its ``data_dir``.
Several jobs of a sweep may start at once on one machine: a file lock makes one of them build the
data while the others wait, and a finished build is detected by its ``prepare_report.json``.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

from cxr_ldm.data.mimic import SPLIT_FILE
from cxr_ldm.data.preparation import prepare_dataset
from cxr_ldm.phantom.studies import generate_phantom

__all__ = ["ensure_phantom_prepared", "is_prepared"]

log = logging.getLogger(__name__)


def is_prepared(data_dir: str | Path) -> bool:
    data_dir = Path(data_dir)
    return all((data_dir / name).is_file() for name in ("prepare_report.json", "train.csv", "validate.csv"))


def ensure_phantom_prepared(
    data_dir: str | Path,
    raw_dir: str | Path,
    n_studies: int,
    raw_size: int,
    size: int,
    seed: int = 0,
    num_workers: int | None = None,
) -> Path:
    """Generate phantom studies into ``raw_dir`` and prepare them into ``data_dir`` unless already done."""
    data_dir, raw_dir = Path(data_dir), Path(raw_dir)
    if is_prepared(data_dir):
        return data_dir
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(data_dir.parent / f".{data_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_prepared(data_dir):  # another job finished it while we waited
            return data_dir
        if not (raw_dir / SPLIT_FILE).is_file():  # written last: a complete tree
            log.info("generating %d phantom studies in %s (first use)", n_studies, raw_dir)
            generate_phantom(raw_dir, n_studies=n_studies, size=raw_size, seed=seed, num_workers=num_workers)
        log.info("preparing phantom studies into %s", data_dir)
        prepare_dataset(raw_dir, raw_dir / "reports", data_dir, size=size, num_workers=num_workers)
    return data_dir

"""Loggers that survive a resume: one metrics.csv and one wandb run per run folder; never a login prompt.

* :class:`ResumableCSVLogger`: Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its folder is not empty,
  so ``ckpt_path=last`` lost the rows of every earlier epoch. This one keeps the file; at its first write after
  a resume it drops only the rows the killed run wrote after its checkpoint (steps the resumed run logs
  again); the rows logged before a checkpoint are written with it; every rewrite is atomic.
* :func:`build_wandb_logger`: the run id is derived from the run folder and ``resume="allow"``, so a requeued or
  resumed job continues its wandb run instead of starting a new one; offline when no API key is configured.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from cxr_ldm.utils.atomic import NO_SPACE_ERRNOS, DiskFullError, atomic_write_text, describe_write_error

log = logging.getLogger(__name__)


def wandb_api_key_available() -> bool:
    """An API key in ``WANDB_API_KEY`` or in the netrc entry that ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_offline(offline: bool | None) -> bool:
    """``WANDB_MODE`` wins; else an explicit ``offline``; else offline exactly when no key is configured."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if mode == "online":
        return False
    if offline is not None:
        return bool(offline)
    if not wandb_api_key_available():
        log.warning("wandb: no API key found (WANDB_API_KEY or `wandb login`); logging offline. "
                    "Upload later with `wandb sync <run dir>/wandb`.")
        return True
    return False


def wandb_run_id(run_dir: str | Path) -> str:
    """A stable wandb run id for a run folder (the same after a requeue, different for every folder)."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode("utf-8")).hexdigest()[:16]


def build_wandb_logger(offline: bool | None = None, id: str | None = None, resume: str = "allow", **kwargs) -> WandbLogger:
    """``WandbLogger`` with one run per run folder: ``id`` defaults to :func:`wandb_run_id` of ``save_dir``."""
    if id is None and kwargs.get("save_dir"):
        id = wandb_run_id(kwargs["save_dir"])
    return WandbLogger(offline=resolve_wandb_offline(offline), id=id, resume=resume, **kwargs)


# ------------------------------------------------------------------------------------------------ CSV
class ResumableExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, minus the deletion of an existing ``metrics.csv`` (module docstring)."""

    def __init__(self, log_dir: str) -> None:
        self.hparams: dict[str, Any] = {}
        self.metrics: list[dict[str, Any]] = []
        self.metrics_keys: list[str] = []
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        os.makedirs(log_dir, exist_ok=True)
        from lightning.fabric.utilities.cloud_io import get_filesystem

        self._fs = get_filesystem(log_dir)
        self._existing = os.path.isfile(self.metrics_file_path)

    def _read_rows(self) -> tuple[list[str], list[dict[str, str]]]:
        with open(self.metrics_file_path, newline="", encoding="utf-8") as handle:
            text = handle.read()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # a row cut off by a kill: drop it
        reader = csv.DictReader(io.StringIO(text))
        rows = [row for row in reader if None not in row]  # rows with more fields than the header: damaged
        return list(reader.fieldnames or []), rows

    def _rewrite(self, keys: list[str], rows: list[dict[str, Any]]) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file_path, out.getvalue(), what="metrics file")

    def _adopt_existing(self) -> None:
        """First write after a resume: keep the old rows before the resumed run's first logged step."""
        self._existing = False
        keys, rows = self._read_rows()
        first = min(int(m["step"]) for m in self.metrics)
        kept = [row for row in rows if row.get("step", "").isdigit() and int(row["step"]) < first]
        self.metrics_keys = sorted(set(keys) | set().union(*self.metrics))
        self._rewrite(self.metrics_keys, kept)

    def save(self) -> None:
        """Append the recorded rows; a new column rewrites the whole file (atomically)."""
        if not self.metrics:
            return
        if self._existing:
            self._adopt_existing()
        new_keys = self._record_new_keys()
        if new_keys and os.path.isfile(self.metrics_file_path):
            _, rows = self._read_rows()
            self._rewrite(self.metrics_keys, rows + self.metrics)
        elif not os.path.isfile(self.metrics_file_path):
            self._rewrite(self.metrics_keys, self.metrics)
        else:
            out = io.StringIO()
            csv.DictWriter(out, fieldnames=self.metrics_keys, lineterminator="\n").writerows(self.metrics)
            _append(self.metrics_file_path, out.getvalue())
        self.metrics = []


def _append(path: str, text: str) -> None:
    """Append in unbuffered writes; on failure (a full disk) cut the file back, so no half row stays."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    size = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as err:
        os.ftruncate(fd, size)
        if err.errno in NO_SPACE_ERRNOS:
            raise DiskFullError(err.errno, describe_write_error(path, err, "metrics file")) from err
        raise
    finally:
        os.close(fd)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives ``ckpt_path=last`` (module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ResumableExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ResumableExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Write the buffered rows with every checkpoint: a run killed later resumes with all rows up to its
        checkpoint's step (Lightning writes them only every ``flush_logs_every_n_steps`` steps)."""
        if self._experiment is not None:
            self.save()



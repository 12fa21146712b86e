"""Checkpoint files: which one a run resumes from, whether a file is one, and writing them atomically.

* :func:`resolve_ckpt_path`: ``ckpt_path=last`` -> the complete checkpoint of the run folder furthest into
  training.
* :func:`inspect_checkpoint`: a truncated file, a file of another kind, a plain state dict, a checkpoint of the
  other stage or of another architecture gets one line naming the option, the file and the fix, before
  Lightning or ``torch.load`` would fail with a traceback.
* :class:`AtomicCheckpointIO`: Lightning's ``TorchCheckpointIO`` writes through fsspec's transaction, i.e. to a
  file in the system temp folder that is then *moved*; across file systems (node-local ``/tmp``, checkpoints on
  shared storage) that move is a copy, and a job killed during it leaves a truncated ``last.ckpt``. This one
  writes beside the target, fsyncs and renames (``utils/atomic.py``), so the newest complete checkpoint always
  loads, and a full disk raises one clear error with the previous file intact.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cxr_ldm.utils.atomic import atomic_write, remove_stale_temporaries

log = logging.getLogger(__name__)


class CheckpointFileError(ValueError):
    """A file given as a checkpoint is not one this run can use (a user error: one line, no traceback)."""


# ------------------------------------------------------------------------------------------------ inspection
def _kind_of_file(path: Path) -> str:
    """What a file that is not a torch checkpoint looks like, from its first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as err:
        return f"an unreadable file ({err.strerror})"
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "truncated"  # a zip (torch.save) whose central directory is missing: cut off
    if head[:8] and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors file"
    signatures = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"\x1f\x8b": "a gzip file",
                  b"\x80": "a pickle file (not torch.save's zip format)"}  # fmt: skip
    for magic, kind in signatures.items():
        if head.startswith(magic):
            return kind
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "not a PyTorch checkpoint"


def load_checkpoint_file(path: str | Path, option: str) -> dict[str, Any]:
    """``torch.load`` of a checkpoint (memory-mapped, weights only), or a :class:`CheckpointFileError`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{option}={path}: no such file")
    if not zipfile.is_zipfile(path):
        kind = _kind_of_file(path)
        if kind == "truncated":
            raise CheckpointFileError(
                f"{option}={path}: the file is truncated ({path.stat().st_size:,} bytes, its end is missing: an "
                f"interrupted copy or write); use a complete copy, or another checkpoint of the run"
            )
        raise CheckpointFileError(f"{option}={path}: {kind}, not a checkpoint written by torch.save")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a damaged zip member, or pickled objects weights-only loading refuses
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointFileError(f"{option}={path}: cannot be read as a checkpoint ({first[:200]})") from err
    if not isinstance(ckpt, Mapping):
        raise CheckpointFileError(f"{option}={path}: holds a {type(ckpt).__name__}, not a checkpoint dict")
    return dict(ckpt)


def _prefixes(keys: Iterable[str]) -> set[str]:
    return {key.split(".", 1)[0] for key in keys}


def _describe(prefixes: set[str]) -> str:
    if {"unet"} <= prefixes:
        return "a stage-2 (latent diffusion) checkpoint"
    if {"autoencoder", "discriminator"} <= prefixes:
        return "a stage-1 (autoencoder) checkpoint"
    return f"a checkpoint of {', '.join(sorted(prefixes)[:6]) or 'nothing'}"


def check_resume_checkpoint(path: str | Path, model: torch.nn.Module, option: str = "ckpt_path") -> None:
    """Raise one clear line unless ``path`` is a Lightning checkpoint this ``model`` can resume from."""
    ckpt = load_checkpoint_file(path, option)
    state = ckpt.get("state_dict")
    if not isinstance(state, Mapping) or "global_step" not in ckpt:
        raise CheckpointFileError(
            f"{option}={path}: a plain state dict, not a training checkpoint (no optimizer, step or epoch): resume "
            f"needs a .ckpt written by `python -m cxr_ldm.train`"
        )
    expected = model.state_dict()
    have, want = _prefixes(state), _prefixes(expected)
    if not (have & want) or (want - have) - {"text_encoder"}:
        raise CheckpointFileError(
            f"{option}={path}: {_describe(have)}; this run trains {type(model).__name__} "
            f"({_describe(want)}): pass a checkpoint of the same stage"
        )
    for key, value in expected.items():
        if key in state and hasattr(state[key], "shape") and tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointFileError(
                f"{option}={path}: written for another architecture ({key} is {list(state[key].shape)} there and "
                f"{list(value.shape)} here): use the model options of the run that wrote it (its "
                f".hydra/config.yaml)"
            )


def check_autoencoder_checkpoint(path: str | Path, option: str = "model.autoencoder_ckpt") -> dict[str, Any]:
    """The checkpoint, if ``path`` is a stage-1 checkpoint of cxr_ldm (what stage 2 reads); else one clear line."""
    ckpt = load_checkpoint_file(path, option)
    state = ckpt.get("state_dict") if isinstance(ckpt.get("state_dict"), Mapping) else ckpt
    hparams = ckpt.get("hyper_parameters") or {}
    prefixes = _prefixes(state)
    if "autoencoder" not in hparams or "autoencoder" not in prefixes:
        kind = _describe(prefixes) if "state_dict" in ckpt else "a plain state dict"
        raise CheckpointFileError(
            f"{option}={path}: {kind}, not a stage-1 checkpoint of cxr_ldm (train one with `python -m cxr_ldm.train "
            f"experiment=aekl` and pass its checkpoints/last.ckpt)"
        )
    return ckpt


def is_loadable(path: str | Path) -> bool:
    """A complete torch zip file (its central directory is there): what ``ckpt_path=last`` may resume."""
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- resolution
def checkpoint_step(path: str | Path) -> int | None:
    """The ``global_step`` a complete checkpoint file holds; None for a file that is not one (truncated...)."""
    if not is_loadable(path):
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt.get("global_step", -1)) if isinstance(ckpt, Mapping) else None
    except Exception:  # a damaged member: not a checkpoint to resume
        return None


def pick_checkpoint(run_dir: str | Path, which: str = "latest") -> Path | None:
    """A complete checkpoint among ``run_dir/checkpoints/*.ckpt``; ``None`` when there is none.

    ``"latest"``: the one furthest into training (its ``global_step``; ``last.ckpt`` on a tie, then the newer
    file), what ``ckpt_path=last`` resumes. ``"best"``: ModelCheckpoint's monitored ``epoch_*.ckpt``
    (``save_top_k: 1``; the newest file if there are several), else the latest: what a finished run keeps.
    An incomplete file (truncated by another tool) is skipped with a warning, and stray temporary files of
    killed writers are removed.
    """
    if which not in ("latest", "best"):
        raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
    ckpt_dir = Path(run_dir) / "checkpoints"
    remove_stale_temporaries(ckpt_dir)
    ranked = []
    for path in sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []:
        step = checkpoint_step(path)
        if step is None:
            log.warning("%s is incomplete (truncated or not a checkpoint); skipping it", path)
            continue
        ranked.append((step, path.name == "last.ckpt", path.stat().st_mtime, path))
    best = [(mtime, path) for _, _, mtime, path in ranked if path.name.startswith("epoch_")]
    if which == "best" and best:
        return max(best)[1]
    return max(ranked)[3] if ranked else None


def resolve_ckpt_path(ckpt_path: str | None, run_dir: str | Path) -> str | None:
    """``None`` -> start fresh; ``"last"`` -> the newest complete checkpoint of ``run_dir``; else the path itself.

    ``last`` takes, among the complete ``checkpoints/*.ckpt`` of the run, the one furthest into training
    (:func:`pick_checkpoint` ``"latest"``: its ``global_step``; ``last.ckpt`` on a tie): a job killed after
    writing an epoch's checkpoint but before its ``last.ckpt`` resumes from that epoch. An incomplete file
    (truncated by another tool) is skipped with a warning, and stray temporary files of killed writers are
    removed. With no checkpoint at all the run starts fresh (a requeued job that died before its first save
    resumes nothing), and says so.
    """
    if ckpt_path is None or str(ckpt_path) == "":
        return None
    if str(ckpt_path) != "last":
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"ckpt_path={ckpt_path}: no such checkpoint file. Pass an existing .ckpt, or ckpt_path=last "
                f"with hydra.run.dir=<the run folder> to resume that run's newest checkpoint."
            )
        return str(path)
    latest = pick_checkpoint(run_dir, "latest")
    if latest is not None:
        return str(latest)
    log.warning("ckpt_path=last: no checkpoint in %s yet; starting from scratch", Path(run_dir) / "checkpoints")
    return None


# ------------------------------------------------------------------------------------------------- writing
class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose files are complete or absent (module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint does not take storage_options")
        atomic_write(path, lambda handle: torch.save(checkpoint, handle), what="checkpoint")

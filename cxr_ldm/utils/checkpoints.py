"""Which checkpoint a run resumes from."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def resolve_ckpt_path(ckpt_path: str | None, run_dir: str | Path) -> str | None:
    """``None`` -> start fresh; ``"last"`` -> the newest checkpoint of ``run_dir``; else the path itself.

    ``last`` prefers ``checkpoints/last.ckpt`` and falls back to the newest ``*.ckpt`` in the run; with no
    checkpoint at all the run starts fresh (a requeued job that died before its first save resumes
    nothing), and says so.
    """
    if ckpt_path is None or str(ckpt_path) == "":
        return None
    if str(ckpt_path) != "last":
        path = Path(ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"ckpt_path={ckpt_path}: no such checkpoint file. Pass an existing .ckpt, or ckpt_path=last "
                f"with hydra.run.dir=<the run folder> to resume that run's newest checkpoint."
            )
        return str(path)
    ckpt_dir = Path(run_dir) / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if last.is_file():
        return str(last)
    found = sorted(ckpt_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if ckpt_dir.is_dir() else []
    if found:
        return str(found[-1])
    log.warning("ckpt_path=last: no checkpoint in %s yet; starting from scratch", ckpt_dir)
    return None

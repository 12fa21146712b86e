"""Test instrument loaded into a command's process through its import path (``PYTHONPATH=tests/faults/slow_write``):
Python imports ``sitecustomize`` at start-up, before the command's own code.

With ``CXR_LDM_SLOW_WRITE=<part of a file name>`` set, the first ``numpy.save`` or PNG ``Image.save`` into a
file whose name holds it is held halfway: half of the bytes are written, flushed and fsynced, then
``CXR_LDM_SLOW_WRITE_MARKER`` (a file path) is written with the process id and the file written to, and the
process sleeps (the disk a slow network file system gives); the test SIGKILLs it there. Without the variable
nothing is changed.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

_PART = os.environ.get("CXR_LDM_SLOW_WRITE", "")
_MARKER = os.environ.get("CXR_LDM_SLOW_WRITE_MARKER", "")
_held: list[str] = []


def _name(target: Any) -> str:
    return os.fspath(target) if isinstance(target, str | os.PathLike) else str(getattr(target, "name", ""))


def _due(target: Any) -> bool:
    return not _held and _PART in Path(_name(target)).name


def _write_slowly(target: Any, data: bytes) -> None:
    _held.append(_name(target))
    handle = open(target, "wb") if isinstance(target, str | os.PathLike) else target  # noqa: SIM115
    handle.write(data[: len(data) // 2])
    handle.flush()
    os.fsync(handle.fileno())
    Path(_MARKER).parent.mkdir(parents=True, exist_ok=True)
    Path(_MARKER).write_text(f"{os.getpid()} {_held[0]}")
    time.sleep(float(os.environ.get("CXR_LDM_SLOW_WRITE_SECONDS", "300")))  # killed during this sleep
    handle.write(data[len(data) // 2 :])
    if handle is not target:
        handle.close()


def _install() -> None:
    import numpy as np
    from PIL import Image

    save_array, save_image = np.save, Image.Image.save

    def slow_array_save(file: Any, arr: Any, *args: Any, **kwargs: Any) -> None:
        if not _due(file):
            return save_array(file, arr, *args, **kwargs)
        buffer = io.BytesIO()
        save_array(buffer, arr, *args, **kwargs)
        _write_slowly(file, buffer.getvalue())
        return None

    def slow_image_save(self: Any, fp: Any, format: str | None = None, **params: Any) -> None:  # noqa: A002
        if not _due(fp):
            return save_image(self, fp, format, **params)
        buffer = io.BytesIO()
        save_image(self, buffer, format or "PNG", **params)
        _write_slowly(fp, buffer.getvalue())
        return None

    np.save = slow_array_save
    Image.Image.save = slow_image_save


if _PART:
    _install()

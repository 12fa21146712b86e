"""Files that are either complete or not there: write to a temporary file beside the target, fsync, rename.

A process killed at any moment (SIGKILL, a node failure) leaves the previous version of the file, never half
of a new one: ``os.replace`` within one folder is atomic on POSIX file systems, and the fsync of the file
before and of the folder after makes the new version survive a crash of the machine too. A write that fails
(a full disk, a quota) removes its temporary file, leaves the previous version in place and raises
:class:`DiskFullError` (or the ``OSError`` itself) naming the file.

Temporary files are named ``.<name>.<pid>.tmp``; :func:`remove_stale_temporaries` clears those of killed
processes. A whole folder (an exported model) is built under a temporary name and renamed by
:func:`atomic_folder`.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

# errors that mean "no room": the fix is to free space (or raise a quota), not to change the command
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DiskFullError(OSError):
    """No space (or quota) left while writing a file; the previous version of the file is intact."""

    def __str__(self) -> str:  # the one-line message, without "[Errno 28]"
        return str(self.strerror)


def describe_write_error(path: str | Path, err: OSError, what: str = "file") -> str:
    """One line: what could not be written, why, and what to do."""
    if err.errno in NO_SPACE_ERRNOS:
        return (
            f"no space left on the device writing the {what} {path} ({os.strerror(err.errno)}); the files written "
            f"before are intact: free space (or raise the quota) and run the same command again"
        )
    return f"could not write the {what} {path}: {err.strerror or err}"


def _no_space_error(err: BaseException | None) -> OSError | None:
    """The no-space ``OSError`` behind ``err`` (itself, or what it was raised from or during), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


def temporary_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some file systems do not open folders; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | Path, write: Callable[[IO[bytes]], object], what: str = "file", durable: bool = True
) -> Path:
    """Write ``path`` through ``write(binary file)`` atomically (module docstring).

    ``durable=False`` skips the fsyncs: still complete-or-absent for a killed process (the kernel keeps what was
    written), not across a power loss; for many small files that a re-run checks anyway (prepared images).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        no_space = _no_space_error(err)  # torch.save's zip writer turns the OSError into a RuntimeError
        if no_space is not None:
            raise DiskFullError(no_space.errno, describe_write_error(path, no_space, what)) from err
        raise
    if durable:
        _fsync_folder(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes, what: str = "file", durable: bool = True) -> Path:
    return atomic_write(path, lambda handle: handle.write(data), what, durable)


def atomic_write_text(path: str | Path, text: str, what: str = "file", durable: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), what, durable)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Build the folder ``path`` in a temporary folder beside it (``.<name>.<random>``), yielded, then rename it.

    On success an existing ``path`` is removed and the temporary folder takes its place (the removal and the
    rename are two steps: a kill between them leaves no ``path``, never a partial one); on any error the
    temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(folder: str | Path, pattern: str = ".*.tmp") -> list[Path]:
    """Delete temporary files left by killed processes (``.<name>.<pid>.tmp`` whose process is gone)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(pattern):
        pid = tmp.name.rsplit(".", 2)[-2] if tmp.name.count(".") >= 3 else ""
        if pid.isdigit() and int(pid) != os.getpid() and Path(f"/proc/{pid}").exists():
            continue  # a live process is writing it
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed

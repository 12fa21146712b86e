"""Output folders checked before the work starts: a file where the folder should be, a file above it, a folder
nobody may write to, or one the system will not create (``/sys``, ``/proc``) is one line naming the option.

Commands call :func:`check_output_folder` before they load a model, so a wrong ``out_dir=`` costs a second, not
a model load and a sampling run; :func:`make_output_folder` creates it and turns the ``OSError`` of a folder
the file system refuses into the same kind of line.
"""

from __future__ import annotations

import os
from pathlib import Path


class OutputFolderError(ValueError):
    """An output folder that cannot be used; the message names the option, the folder and the fix."""


def first_existing(path: Path) -> Path:
    """The nearest of ``path`` and its parents that exists (a file above a folder-to-be shows up here)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def folder_problem(path: str | Path, option: str = "out_dir") -> str | None:
    """Why ``path`` cannot be the output folder given as ``option``, in one line; ``None`` when it can."""
    path = Path(path).expanduser()
    given = f"{option}={path}"
    if path.exists() and not path.is_dir():
        return f"{given} is a file, not a folder: give the path of a folder (it is created when missing)"
    there = first_existing(path)
    if not there.is_dir():
        return f"{given}: {there} is a file, so no folder can be made under it: give another {option}"
    if not os.access(there, os.W_OK | os.X_OK):
        what = "the folder" if there == path else f"{there}, where it would be created,"
        return f"{given}: {what} is not writable by this user: give a folder you can write to"
    return None


def check_output_folder(path: str | Path, option: str = "out_dir") -> Path:
    """``path`` (expanded) if it can be the output folder; else :class:`OutputFolderError`. Creates nothing."""
    problem = folder_problem(path, option)
    if problem is not None:
        raise OutputFolderError(problem)
    return Path(path).expanduser()


def describe_folder_error(path: str | Path, error: OSError, option: str = "out_dir") -> str:
    """One line for an ``OSError`` met while creating ``path`` (or a file in it), given as ``option``."""
    problem = folder_problem(path, option)
    if problem is not None:
        return problem
    where = f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
    return (
        f"{option}={Path(path).expanduser()}: cannot create the folder{where}: {error.strerror or error}; give a "
        f"folder on a writable file system"
    )


def make_output_folder(path: str | Path, option: str = "out_dir") -> Path:
    """Check ``path`` and create it (with its parents); every failure is an :class:`OutputFolderError`."""
    folder = check_output_folder(path, option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputFolderError(describe_folder_error(folder, error, option)) from error
    return folder


def write_or_folder_error(
    path: str | Path, error: OSError, what: str = "file", option: str = "out_dir"
) -> str:
    """One line for an ``OSError`` while writing into the output folder: a full disk says so, else the folder's
    problem (:func:`describe_folder_error`)."""
    from cxr_ldm.utils.atomic import NO_SPACE_ERRNOS, describe_write_error

    if error.errno in NO_SPACE_ERRNOS:
        return describe_write_error(error.filename or path, error, what)
    return describe_folder_error(path, error, option)

"""Small helpers for the command-line entry points."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from cxr_ldm.utils.folders import describe_folder_error
from cxr_ldm.utils.overrides import check_override_types

HYDRA_FULL_ERROR = "HYDRA_FULL_ERROR"
TRACEBACK = "CXR_LDM_TRACEBACK"
# Where the commands' configs are: the package cxr_ldm.conf, edited in conf/ at the repository root and shipped in
# the wheel (pyproject's package-dir). Named as a package, so `python -m`, console scripts, editable and wheel
# installs all find the same files, wherever the command's module file lies.
CONF = "pkg://cxr_ldm.conf"
INFERENCE_CONF = "pkg://cxr_ldm.conf.inference"  # sample, evaluate, export, app, demo


def require_options(cfg: DictConfig, options: dict[str, str], command: str) -> None:
    """Exit with one clear message listing every required option that was not given, and what it means."""
    missing = [name for name in options if OmegaConf.is_missing(cfg, name) or cfg.get(name) in (None, "")]
    if missing:
        lines = [f"{command}: missing required option(s): {', '.join(f'{m}=' for m in missing)}"]
        lines += [f"  {name}=...  {options[name]}" for name in missing]
        lines.append(f"see `python -m {command} --help`")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2)


def run_command(func: Callable[[DictConfig], Any], cfg: DictConfig, user_errors: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError)) -> Any:  # fmt: skip
    """Run a command; a user error (wrong option, path, file) ends it with one line on stderr and exit status 1.

    ``CXR_LDM_TRACEBACK=1`` shows the traceback instead (for bug reports). ``SystemExit`` is not an ``Exception``,
    so Hydra lets it through untouched. A log record that cannot be written (the run's log file on a full disk)
    is dropped instead of printing logging's traceback for each one above that line (``logging.raiseExceptions``,
    Python's switch for that), unless ``CXR_LDM_TRACEBACK`` is set.
    """
    logging.raiseExceptions = bool(os.environ.get(TRACEBACK))
    try:
        return func(cfg)
    except user_errors as err:
        if os.environ.get(TRACEBACK):
            raise
        sys.exit(f"error: {err}")


def hydra_command(config_path: str, config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """``hydra.main`` whose own errors (an unknown option, a config that is not there, an override it cannot
    parse) end the command as the command's errors do: one line on stderr (``error: ...``), exit status 1.

    Hydra prints those as several lines plus a hint and exits; it raises them instead only under its
    ``HYDRA_FULL_ERROR=1``. So that is set while Hydra composes, and the task itself (and what it starts: DDP
    ranks, SLURM jobs) runs in the environment the command was given. ``CXR_LDM_TRACEBACK=1`` or the user's own
    ``HYDRA_FULL_ERROR=1`` shows the traceback. An override of the wrong type (``trainer.max_epochs=abc``) is
    refused the same way before the task runs (:func:`cxr_ldm.utils.overrides.check_override_types`).
    """

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        state: dict[str, Any] = {"started": False, "given": None}

        @functools.wraps(task)
        def task_as_given(cfg: DictConfig) -> Any:
            state["started"] = True
            _set_env(HYDRA_FULL_ERROR, state["given"])
            try:
                run_command(check_override_types, cfg)  # n_studies=abc: refused before anything runs, naming it
                return task(cfg)
            finally:
                os.environ[HYDRA_FULL_ERROR] = "1"  # a multirun composes its next job after this one

        hydra_main = hydra.main(version_base="1.3", config_path=config_path, config_name=config_name)(task_as_given)

        @functools.wraps(task)
        def main() -> Any:
            state["started"], state["given"] = False, os.environ.get(HYDRA_FULL_ERROR)
            os.environ[HYDRA_FULL_ERROR] = "1"
            try:
                return hydra_main()
            except HydraException as error:
                if state["started"] or state["given"] or os.environ.get(TRACEBACK):
                    raise
                sys.exit(f"error: {hydra_error_line(error)}")
            except OSError as error:  # Hydra's own log folder (out_dir/.hydra_logs): made before the task runs
                if state["started"] or os.environ.get(TRACEBACK):
                    raise
                sys.exit(f"error: {log_folder_error_line(error, sys.argv[1:])}")
            finally:
                _set_env(HYDRA_FULL_ERROR, state["given"])

        return main

    return decorate


def log_folder_error_line(error: OSError, overrides: list[str]) -> str:
    """One line for Hydra failing to make its log folder: the override whose folder holds it is named
    (``out_dir=FILE``: "out_dir=FILE is a file, not a folder ...")."""
    failed = os.path.abspath(str(error.filename or ""))
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or not value:
            continue
        folder = os.path.abspath(os.path.expanduser(value))
        if failed == folder or failed.startswith(folder.rstrip(os.sep) + os.sep):
            return describe_folder_error(value, error, key)
    return (
        f"cannot create the command's log folder {error.filename}: {error.strerror or error}; give an out_dir= "
        "(or hydra.run.dir=) on a writable file system"
    )


def hydra_error_line(error: BaseException) -> str:
    """Hydra's message in one line: ``header:`` + tab-indented items become ``header: a, b``; the config search
    path is left out; an unparsable override is named; the OmegaConf cause follows in brackets."""
    parts: list[str] = []
    header: str | None = None
    items: list[str] = []
    for line in [*str(error).splitlines(), ""]:
        if line.startswith("Config search path:"):
            break
        if header is not None and line.startswith(("\t", " ")) and line.strip():
            items.append(line.strip())
            continue
        if header is not None:
            parts.append(f"{header} {', '.join(items)}")
            header, items = None, []
        if line.strip().endswith(":"):
            header = line.strip()
        elif line.strip():
            parts.append(line.strip())
    if header is not None:
        parts.append(f"{header} {', '.join(items)}")
    text = ". ".join(part.rstrip(".") for part in parts)
    if isinstance(error, OverrideParseException):
        text = f"{error.override}: {text}"
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0]})"
    return text


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value

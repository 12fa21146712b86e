"""Small helpers for the command-line entry points."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf


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
    so Hydra lets it through untouched.
    """
    try:
        return func(cfg)
    except user_errors as err:
        if os.environ.get("CXR_LDM_TRACEBACK"):
            raise
        sys.exit(f"error: {err}")

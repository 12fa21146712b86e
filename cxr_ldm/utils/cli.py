"""Small helpers for the command-line entry points."""

from __future__ import annotations

import sys

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

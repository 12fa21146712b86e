"""Prompt lists for the commands that sample: ``prompts=[...]`` and ``prompts_file=`` lines, checked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


class PromptError(ValueError):
    """A wrong prompt option; the message names it."""


def collect_prompts(prompts: Any, prompts_file: str | None, option: str = "prompts") -> list[str]:
    """``prompts`` (a list or one string) followed by the non-blank lines of ``prompts_file``; none may be empty."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(prompts):
            prompts = OmegaConf.to_container(prompts, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    if prompts is None:
        prompts = []
    elif isinstance(prompts, str):
        prompts = [prompts]
    elif not isinstance(prompts, Sequence):
        raise PromptError(f"{option}= must be a list of strings, got {type(prompts).__name__}")
    result = [str(p) for p in prompts]
    if prompts_file:
        path = Path(prompts_file).expanduser()
        if not path.is_file():
            raise PromptError(f"{option}_file={str(path)!r} does not exist")
        result += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not result:
        raise PromptError(f"no prompts: give {option}='[\"...\", \"...\"]' or {option}_file=FILE (one per line)")
    empty = [i for i, p in enumerate(result) if not p.strip()]
    if empty:
        raise PromptError(f"{option}= contains empty prompts at positions {empty}; every prompt needs text")
    return result

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
        raise PromptError(
            f'no prompts: give {option}=\'["...", "..."]\' or {option}_file=FILE (one per line)'
        )
    empty = [i for i, p in enumerate(result) if not p.strip()]
    if empty:
        raise PromptError(f"{option}= contains empty prompts at positions {empty}; every prompt needs text")
    return result


def over_length(prompts: Sequence[str], context_length: int | None = None) -> list[tuple[int, int]]:
    """``(index, tokens)`` of each prompt longer than the text encoder reads (77 tokens, SOT and EOT included)."""
    from cxr_ldm.data.tokenization import CONTEXT_LENGTH, count_tokens

    limit = context_length or CONTEXT_LENGTH
    counts = ((i, count_tokens(str(p), limit)) for i, p in enumerate(prompts))
    return [(i, n) for i, n in counts if n > limit]


def check_prompt_lengths(
    prompts: Sequence[str],
    option: str = "prompts",
    truncate: bool = False,
    truncate_option: str | None = "truncate_prompts",
) -> None:
    """A prompt longer than the text encoder's 77 tokens is an error naming it, unless ``truncate``: training cut
    its reports there, so the words past token 77 would silently change nothing. ``truncate_option``: the
    command's option that allows it (None: the command has none)."""
    from cxr_ldm.data.tokenization import CONTEXT_LENGTH

    long = [] if truncate else over_length(prompts)
    if long:
        i, n = long[0]
        start = " ".join(prompts[i].split()[:6])
        more = f" (and {len(long) - 1} more)" if len(long) > 1 else ""
        raise PromptError(
            f"{option}[{i}] ('{start} ...') is {n} tokens{more}, more than the text encoder's {CONTEXT_LENGTH}: "
            f"shorten it"
            + (
                f", or set {truncate_option}=true to cut it at {CONTEXT_LENGTH} tokens as training does"
                if truncate_option
                else ""
            )
        )

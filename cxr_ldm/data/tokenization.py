"""The one tokenizer of the project: OpenCLIP's BPE, as Stable Diffusion 2.x uses it.

It lives outside ``data/`` and ``models/`` because both need it (the DataModule tokenizes report
excerpts, sampling tokenizes prompts) and those two packages never import each other. One
tokenizer means the empty prompt gives the same token sequence in training and in sampling.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache

import torch
from open_clip.tokenizer import SimpleTokenizer  # imported here, never first inside a forked worker

CONTEXT_LENGTH = 77
SOT_TOKEN = 49406
EOT_TOKEN = 49407
VOCAB_SIZE = 49408


@lru_cache(maxsize=4)
def _simple_tokenizer(context_length: int):
    # open_clip's SimpleTokenizer ships its BPE vocabulary in the wheel: no download, pads with 0.
    return SimpleTokenizer(context_length=context_length)


def warm_up(context_length: int = CONTEXT_LENGTH) -> None:
    """Build the tokenizer in this process, so DataLoader workers forked later inherit it.

    A module imported for the first time inside a forked worker trips wandb's import hook
    ("not valid in a forked process"); loading everything before the fork avoids it.
    """
    _simple_tokenizer(context_length)


def count_tokens(text: str, context_length: int = CONTEXT_LENGTH) -> int:
    """Tokens the text needs including SOT and EOT (may exceed ``context_length``)."""
    tok = _simple_tokenizer(context_length)
    return len(tok.encode(text)) + 2


def tokenize(
    texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH, warn_truncation: bool = False
) -> torch.LongTensor:
    """Token ids ``[B, context_length]``: SOT, BPE tokens, EOT, then 0-padding (SD 2.x convention).

    Over-long texts are cut to ``context_length`` with EOT kept last, as open_clip does;
    ``warn_truncation`` makes that visible (the sample command sets it, training does not).
    """
    if isinstance(texts, str):
        texts = [texts]
    tok = _simple_tokenizer(context_length)
    if warn_truncation:
        for text in texts:
            n = count_tokens(text, context_length)
            if n > context_length:
                warnings.warn(
                    f"prompt of {n} tokens truncated to {context_length}: {text[:60]!r}...",
                    stacklevel=2,
                )
    return tok(list(texts), context_length=context_length).long()

"""Which words of a report a training sample sees: a random excerpt, or the empty prompt.

The reference drew 1..4 sentences (an exclusive upper bound) and always 1 for a two-sentence report;
here both bounds are inclusive and capped by the report's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EMPTY_PROMPT = ""


@dataclass(frozen=True)
class ExcerptSampler:
    """A contiguous run of ``min_sentences..max_sentences`` sentences; the empty prompt with ``p_uncond``.

    ``p_uncond`` is classifier-free-guidance dropout: the empty prompt tokenizes with the project's one
    tokenizer, so training and sampling see the very same unconditional tokens.
    """

    min_sentences: int = 1
    max_sentences: int = 5
    p_uncond: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.min_sentences <= self.max_sentences:
            raise ValueError(
                f"excerpt bounds must satisfy 1 <= min_sentences <= max_sentences, "
                f"got min_sentences={self.min_sentences}, max_sentences={self.max_sentences}"
            )
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must lie in [0, 1], got {self.p_uncond}")

    def __call__(self, sentences: list[str], generator: torch.Generator | None = None) -> str:
        """Draw from ``generator`` (deterministic excerpts) or torch's global RNG (seeded per worker)."""
        if torch.rand((), generator=generator).item() < self.p_uncond or not sentences:
            return EMPTY_PROMPT
        n = len(sentences)
        high = min(self.max_sentences, n)
        low = min(self.min_sentences, high)
        k = int(torch.randint(low, high + 1, (), generator=generator))
        start = int(torch.randint(0, n - k + 1, (), generator=generator))
        return " ".join(sentences[start : start + k])

"""Excerpt bounds (both inclusive, capped by the report) and the unconditional probability."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from cxr_ldm.data.excerpts import EMPTY_PROMPT, ExcerptSampler

SENTENCES = [f"Sentence {i}." for i in range(10)]


def lengths(sampler: ExcerptSampler, sentences: list[str], n: int, seed: int = 0) -> Counter:
    gen = torch.Generator().manual_seed(seed)
    out = Counter()
    for _ in range(n):
        text = sampler(sentences, generator=gen)
        out[0 if text == EMPTY_PROMPT else text.count(".")] += 1
    return out


def test_lengths_cover_one_to_five_inclusive():
    counts = lengths(ExcerptSampler(p_uncond=0.0), SENTENCES, 3000)
    assert set(counts) == {1, 2, 3, 4, 5}
    for k in range(1, 6):  # uniform over 1..5: each about 600 of 3000
        assert 480 < counts[k] < 720, counts


def test_two_sentence_report_gives_one_or_two_sentences():
    # the reference always drew 1 for a two-sentence report
    counts = lengths(ExcerptSampler(p_uncond=0.0), SENTENCES[:2], 2000)
    assert set(counts) == {1, 2}
    assert 850 < counts[2] < 1150


def test_excerpts_are_contiguous_runs_in_report_order():
    gen = torch.Generator().manual_seed(1)
    sampler = ExcerptSampler(p_uncond=0.0)
    joined = " ".join(SENTENCES)
    for _ in range(300):
        text = sampler(SENTENCES, generator=gen)
        assert text in joined and text.startswith("Sentence") and text.endswith(".")


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_unconditional_share_matches_p_uncond(p):
    n = 20000
    counts = lengths(ExcerptSampler(p_uncond=p), SENTENCES, n, seed=3)
    share = counts[0] / n
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_no_unconditional_when_p_is_zero_and_empty_report_gives_empty_prompt():
    assert lengths(ExcerptSampler(p_uncond=0.0), SENTENCES, 2000)[0] == 0
    assert ExcerptSampler(p_uncond=0.0)([]) == EMPTY_PROMPT


def test_same_generator_seed_same_excerpt():
    sampler = ExcerptSampler()
    a = [sampler(SENTENCES, torch.Generator().manual_seed(s)) for s in range(50)]
    b = [sampler(SENTENCES, torch.Generator().manual_seed(s)) for s in range(50)]
    assert a == b


@pytest.mark.parametrize(("lo", "hi", "p"), [(0, 5, 0.1), (3, 2, 0.1), (1, 5, 1.5)])
def test_bad_bounds_are_refused(lo, hi, p):
    with pytest.raises(ValueError):
        ExcerptSampler(lo, hi, p)

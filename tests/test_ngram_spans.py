"""N-gram prompt-lookup spans (acceptance/ngram_spans.py): vLLM's proposals, hand-computed spans, properties."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdec_sim.acceptance.ngram_spans import NgramSettings, matched_fraction, ngram_spans, propose


def _propose(context, lo, hi, k):
    return propose(np.array(context), NgramSettings(lo, hi, k)).tolist()


# The cases of vLLM's own tests (vllm-project/vllm tests/v1/spec_decode/test_ngram.py,
# test_find_longest_matched_ngram_and_propose_tokens and test_ngram_proposer) and the docstring
# example of NgramProposer.propose: (context, prompt_lookup_min, prompt_lookup_max, k, proposal).
VLLM_CASES = [
    ([1, 2, 3, 4, 1, 2, 3, 5, 6], 2, 2, 2, []),
    ([1, 2, 3, 4, 1, 2, 3], 2, 2, 3, [4, 1, 2]),
    ([1, 2, 3, 4, 1, 2, 3], 2, 2, 2, [4, 1]),
    ([1, 2, 3, 4, 1, 2, 3], 1, 1, 3, [4, 1, 2]),
    ([1, 3, 6, 2, 3, 4, 1, 2, 3], 2, 2, 3, [4, 1, 2]),
    ([1, 3, 6, 2, 3, 4, 1, 2, 3], 1, 1, 2, [6, 2]),          # the first occurrence, not the latest
    ([1, 2, 3, 4, 5], 2, 2, 2, []),
    ([1, 2, 3, 4, 1, 2, 3], 4, 4, 2, []),
    ([1, 2, 3, 4, 1, 2, 3], 3, 4, 2, [4, 1]),
    ([2, 3, 4, 5, 1, 2, 3, 4, 1, 2, 3, 4], 3, 4, 2, [1, 2]),  # the 4-gram wins over an earlier 3-gram
    ([3, 4, 5, 2, 3, 4, 1, 2, 3, 4], 2, 4, 2, [1, 2]),
    ([1, 2, 3, 100, 1, 2, 3, 200, 1, 2, 3, 300, 1, 2, 3], 3, 3, 2, [100, 1]),
    ([1, 2, 3, 4, 2, 3], 2, 3, 4, [4, 2, 3]),                 # cut at the end of the context
]


@pytest.mark.parametrize("context,lo,hi,k,expected", VLLM_CASES)
def test_proposals_are_vllms(context, lo, hi, k, expected):
    assert _propose(context, lo, hi, k) == expected


def test_context_shorter_than_min_proposes_nothing():
    assert _propose([7], 1, 4, 3) == []
    assert _propose([7, 7], 3, 4, 3) == []
    assert _propose([7, 7], 1, 1, 3) == [7]  # an occurrence may overlap the suffix


def spans(prompt, output, lo=1, hi=2, k=8):
    return ngram_spans(np.array(prompt), np.array(output), NgramSettings(lo, hi, k)).tolist()


# tokens = prompt + output = [1 2 3 4 5 6 | 7 3 4 5 6 8 9]: after output token 3 the lookup finds the
# prompt's 3 and proposes 4 5 6 7 3; the output copies 4 5 6, then writes 8: span 4, then 3, 2, 1.
COPY_PROMPT, COPY_OUTPUT = [1, 2, 3, 4, 5, 6], [7, 3, 4, 5, 6, 8, 9]


def test_copied_block_gives_a_descending_run():
    assert spans(COPY_PROMPT, COPY_OUTPUT) == [1, 4, 3, 2, 1, 1, 1]
    assert spans(COPY_PROMPT, COPY_OUTPUT, 1, 1) == [1, 4, 3, 2, 1, 1, 1]


def test_k_caps_the_span_at_k_plus_one():
    assert spans(COPY_PROMPT, COPY_OUTPUT, k=2) == [1, 3, 3, 2, 1, 1, 1]
    assert spans(COPY_PROMPT, COPY_OUTPUT, k=1) == [1, 2, 2, 2, 1, 1, 1]


def test_min_n_needs_longer_matches():
    # with 3-grams only [3 4 5] (after output token 5) and [4 5 6] match
    assert spans(COPY_PROMPT, COPY_OUTPUT, 3, 3) == [1, 1, 1, 2, 1, 1, 1]


def test_longest_ngram_beats_earliest_shorter_one():
    # tokens [5 9 1 5 2 3 | 1 5 2 3]: after output "1 5" the 2-gram [1 5] (at 2) proposes 2 3 ...,
    # while the 1-gram [5] alone takes its first occurrence (at 0) and proposes 9 ...
    assert spans([5, 9, 1, 5, 2, 3], [1, 5, 2, 3], 1, 2) == [4, 3, 2, 1]
    assert spans([5, 9, 1, 5, 2, 3], [1, 5, 2, 3], 1, 1) == [4, 1, 2, 1]  # n-gram runs need not fall by one


def test_span_ends_at_the_last_output_token():
    # a span counts tokens that exist: a full copy of the rest gives n - i, the last span is 1
    assert spans([4, 5, 6, 7], [4, 5, 6, 7]) == [4, 3, 2, 1]


def test_no_match_gives_ones():
    assert spans([1, 2, 3], [4, 5, 6, 7]) == [1, 1, 1, 1]
    assert spans([], [9]) == [1]
    assert spans([1], []) == []


def test_matched_fraction_counts_steps_with_a_proposal():
    # proposals after output tokens 3, 4, 5, 6 (positions 1..4) of the 6 decode steps 0..5
    assert matched_fraction(COPY_PROMPT, COPY_OUTPUT, NgramSettings(1, 2, 8)) == pytest.approx(4 / 6)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="prompt_lookup_max"):
        NgramSettings(3, 2, 4)
    with pytest.raises(ValueError, match="prompt_lookup_min"):
        NgramSettings(0, 2, 4)
    with pytest.raises(ValueError, match="k must be"):
        NgramSettings(1, 2, 0)


def brute_force_spans(prompt, output, lo, hi, k):
    """Position by position, as vLLM's proposer reads: longest n first, earliest occurrence, k tokens after."""
    tokens, out = list(prompt) + list(output), []
    for i in range(len(output)):
        context = tokens[:len(prompt) + i + 1]
        proposal = []
        for n in range(hi, lo - 1, -1):
            starts = [s for s in range(len(context) - n) if context[s:s + n] == context[-n:]]
            if n < len(context) and starts:
                proposal = context[starts[0] + n:starts[0] + n + k]
                break
        accepted = 0
        for guess, truth in zip(proposal, output[i + 1:]):
            if guess != truth:
                break
            accepted += 1
        out.append(1 + accepted)
    return out


sequences = st.lists(st.integers(0, 3), min_size=0, max_size=25)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(prompt=sequences, output=st.lists(st.integers(0, 3), min_size=1, max_size=25),
       lo=st.integers(1, 3), extra=st.integers(0, 2), k=st.integers(1, 6))
def test_spans_match_a_position_by_position_lookup(prompt, output, lo, extra, k):
    got = spans(prompt, output, lo, lo + extra, k)
    assert got == brute_force_spans(prompt, output, lo, lo + extra, k)
    n = len(output)
    assert all(1 <= s <= min(k + 1, n - i) for i, s in enumerate(got))
    assert got[-1] == 1


@settings(max_examples=100, deadline=None, derandomize=True)
@given(block=st.lists(st.integers(10, 10_000), min_size=2, max_size=12, unique=True),
       noise=st.integers(0, 5))
def test_a_copied_unique_block_runs_down_by_one(block, noise):
    # the output repeats a block of distinct tokens found once in the prompt: inside the copy every
    # lookup finds the one occurrence, so the spans run n-1, n-2, ..., 1 after its first token
    prompt = [1] * noise + block + [2]
    got = spans(prompt, block + [3], 1, 3, k=len(block) + 1)
    assert got[:len(block)] == list(range(len(block), 0, -1))

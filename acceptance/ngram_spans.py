"""Spans of n-gram prompt lookup, computed the way vLLM's V1 `NgramProposer` proposes (pure numpy).

vLLM (`vllm/v1/spec_decode/ngram_proposer.py`, `_find_longest_matched_ngram_and_propose_tokens`, a KMP
scan over the reversed context) proposes, for a context `c` (prompt + output so far):

1. the longest n in [prompt_lookup_min, prompt_lookup_max] whose suffix `c[-n:]` occurs earlier in `c`
   (an occurrence may overlap the suffix but must end before the last token);
2. of the occurrences of that n-gram, the earliest (the leftmost start; vLLM's own test "Multiple 3-gram
   matched, but always pick the first one");
3. the up to k tokens that follow it, `c[s + n : s + n + k]`, cut at the end of the context (no tokens
   are proposed when the context is shorter than prompt_lookup_min or no n-gram matches).

Here every position of an output is handled at once: n-grams get dense integer ids (one stable sort per n),
the first occurrence of every id is its earliest start, and a suffix has an earlier occurrence exactly when
the first occurrence of its id starts before it. A step whose last input is output token i proposes from
the context prompt + output[:i + 1]; its span is 1 + the number of proposed tokens that equal the true next
tokens output[i + 1:], so 1 <= spans[i] <= min(k + 1, len(output) - i) and the last span is 1 (the span
counts tokens that could really be emitted; the replay's `min(span, k + 1, tokens left)` caps the rest).
vLLM's max_model_len cap on k is not modelled (it only bites at the context limit).

Unlike a draft model's, n-gram spans need not fall by one along an accepted run: after a token is
accepted the suffix grows, and the earliest occurrence of the longer (or same) n-gram may be another one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NgramSettings:
    """vLLM's prompt lookup options; k (num_speculative_tokens) caps the proposal and so the span at k + 1."""

    prompt_lookup_min: int = 1
    prompt_lookup_max: int = 4
    k: int = 8

    def __post_init__(self):
        if self.prompt_lookup_min < 1:
            raise ValueError(f"prompt_lookup_min must be >= 1, not {self.prompt_lookup_min}")
        if self.prompt_lookup_max < self.prompt_lookup_min:
            raise ValueError(f"prompt_lookup_max ({self.prompt_lookup_max}) must be >= prompt_lookup_min "
                             f"({self.prompt_lookup_min})")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, not {self.k}")


@dataclass(frozen=True)
class Proposals:
    """For each context end p (index of its last token): where the proposal starts and how long it is."""

    start: np.ndarray   # index into the token sequence of the first proposed token (undefined if length 0)
    length: np.ndarray  # number of proposed tokens, 0 when nothing matched
    ngram: np.ndarray   # n of the matched n-gram, 0 when nothing matched


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids of equal keys (0..groups-1) and, per element, the first index holding its key (one stable sort)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    new_group = np.empty(len(keys), dtype=bool)
    new_group[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new_group[1:])
    group_of_sorted = np.cumsum(new_group) - 1
    ids = np.empty(len(keys), dtype=np.int64)
    ids[order] = group_of_sorted
    first = order[new_group]              # stable sort: the smallest index of each group comes first
    return ids, first[ids]


def propose_all(tokens: np.ndarray, first_end: int, settings: NgramSettings) -> Proposals:
    """vLLM's proposal for every context tokens[:p + 1], p = first_end .. len(tokens) - 1."""
    tokens = np.asarray(tokens, dtype=np.int64)
    total = len(tokens)
    ends = np.arange(first_end, total, dtype=np.int64)
    best_n = np.zeros(len(ends), dtype=np.int64)
    best_start = np.zeros(len(ends), dtype=np.int64)
    base, first_start = _group(tokens)    # first_start[q]: earliest start of the n-gram starting at q
    ids = base
    for n in range(1, settings.prompt_lookup_max + 1):
        if n > total:
            break
        if n > 1:  # ids of n-grams starting at q: the (n-1)-gram at q followed by token q + n - 1
            ids, first_start = _group(ids[:-1] * (total + 1) + base[n - 1:])
        if n < settings.prompt_lookup_min:
            continue
        q = ends - n + 1                  # start of the suffix n-gram of context tokens[:p + 1]
        valid = q >= 1
        earlier = np.zeros(len(ends), dtype=bool)
        earlier[valid] = first_start[q[valid]] < q[valid]
        best_n[earlier] = n               # n grows, so the longest matching n wins
        best_start[earlier] = first_start[q[earlier]]
    start = best_start + best_n
    length = np.where(best_n > 0, np.minimum(settings.k, ends + 1 - start), 0)
    return Proposals(start=start, length=length, ngram=best_n)


def propose(context, settings: NgramSettings) -> np.ndarray:
    """The tokens vLLM's n-gram proposer drafts after `context` (empty when nothing matches)."""
    context = np.asarray(context, dtype=np.int64)
    if len(context) < settings.prompt_lookup_min:
        return context[:0]
    prop = propose_all(context, len(context) - 1, settings)
    s, n = int(prop.start[0]), int(prop.length[0])
    return context[s:s + n]


def ngram_spans(prompt, output, settings: NgramSettings) -> np.ndarray:
    """spans[i] for every output token i (see the module docstring): int64 array of len(output)."""
    prompt = np.asarray(prompt, dtype=np.int64).reshape(-1)
    output = np.asarray(output, dtype=np.int64).reshape(-1)
    if len(output) == 0:
        return np.zeros(0, dtype=np.int64)
    tokens = np.concatenate([prompt, output])
    total, first_end = len(tokens), len(prompt)
    prop = propose_all(tokens, first_end, settings)
    ends = np.arange(first_end, total, dtype=np.int64)
    # a proposal may not run past the context end, nor be checked past the last output token
    usable = np.minimum(prop.length, total - 1 - ends)
    j = np.arange(settings.k, dtype=np.int64)
    inside = j[None, :] < usable[:, None]
    guess = tokens[np.where(inside, prop.start[:, None] + j[None, :], 0)]
    truth = tokens[np.where(inside, ends[:, None] + 1 + j[None, :], 0)]
    hit = inside & (guess == truth)
    accepted = np.cumprod(hit, axis=1).sum(axis=1)
    return 1 + accepted


def matched_fraction(prompt, output, settings: NgramSettings) -> float:
    """Share of decode steps (positions 0 .. len(output) - 2) at which the lookup proposes anything."""
    prompt = np.asarray(prompt, dtype=np.int64).reshape(-1)
    output = np.asarray(output, dtype=np.int64).reshape(-1)
    if len(output) < 2:
        return 0.0
    prop = propose_all(np.concatenate([prompt, output]), len(prompt), settings)
    return float(np.mean(prop.length[:-1] > 0))

"""What one engine step computes (`StepShape`), and the one builder that makes it from plain numbers.

The engine prices the step it runs, the policies price candidate steps, and the profiler's
replay re-executes logged steps: all three build their `StepShape` here, so a step is described
the same way everywhere. Inputs are plain numbers (proposal lengths, token counts), never engine
objects. What differs between callers is only what they know: the engine knows each prefill
chunk's context, a policy choosing k before the chunks are cut knows only the prefill total.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(slots=True)
class StepShape:
    """What one engine step computes, summed over the requests it carries."""

    num_decode: int = 0  # decoding requests (B)
    num_proposing: int = 0  # decoding requests with k > 0 (m)
    verify_tokens: int = 0  # sum over decoding requests of (k_r + 1)
    prefill_tokens: int = 0  # prompt tokens (or prefill-chunk tokens) in the step
    num_prefill: int = 0  # requests carrying a prefill chunk
    kv_tokens: int = 0  # context tokens already in the KV cache that the step reads
    max_k: int = 0  # sequential draft passes (1 for a tree: one pass of the heads drafts every node)
    draft_batch_sizes: tuple[int, ...] = ()  # requests drafting at sequential draft pass j = 1..max_k
    prefill_attention_tokens2: float = 0.0  # sum_i chunk_i * (context_i + chunk_i / 2)

    @property
    def num_seqs(self) -> int:
        return self.num_decode + self.num_prefill


@dataclass(frozen=True, slots=True)
class PrefillTerms:
    """Sums over the prefill chunks of a step: tokens, chunks, context read, attention work."""

    tokens: int = 0
    chunks: int = 0
    context_tokens: int = 0
    attention_tokens2: float = 0.0


NO_PREFILL = PrefillTerms()


def prefill_terms(chunks: Iterable[tuple[int, int]]) -> PrefillTerms:
    """PrefillTerms of (chunk tokens, context tokens already cached) pairs."""
    tokens = count = context = 0
    attn2 = 0.0
    for chunk, ctx in chunks:
        tokens += chunk
        count += 1
        context += ctx
        attn2 += chunk * (ctx + chunk / 2.0)
    return PrefillTerms(tokens, count, context, attn2)


def shape_from_levels(num_decode: int, level_counts: Sequence[int], kv_tokens: int,
                      prefill: PrefillTerms = NO_PREFILL, tree: bool = False, num_proposing: int | None = None,
                      draft_tokens: int | None = None) -> StepShape:
    """The StepShape of a step whose draft level j (1-based) is drafted by level_counts[j-1] requests.

    kv_tokens counts the decoding requests' contexts; the prefill chunks' contexts are added
    from `prefill`. num_proposing defaults to level_counts[0] (requests with k >= 1) and
    draft_tokens (tokens verified beyond each request's one) to sum(level_counts); callers that
    price a level as already paid for (the greedy policy) or replay a logged step give both."""
    levels = len(level_counts)
    proposing = (level_counts[0] if levels else 0) if num_proposing is None else num_proposing
    if draft_tokens is None:
        draft_tokens = sum(level_counts)
    if tree and levels:  # one pass of the tree heads drafts every node
        levels, level_counts = 1, (proposing,)
    return StepShape(num_decode, proposing, num_decode + draft_tokens, prefill.tokens, prefill.chunks,
                     kv_tokens + prefill.context_tokens, levels, tuple(level_counts), prefill.attention_tokens2)


def level_counts_of(ks: Sequence[int]) -> tuple[int, ...]:
    """[j-1] = number of proposals with k >= j, for j = 1..max(ks)."""
    max_k = max(ks) if ks else 0
    if not max_k:
        return ()
    if min(ks) == max_k:  # uniform proposal: every request drafts at every level
        return (len(ks),) * max_k
    counts = [0] * (max_k + 1)
    for k in ks:
        counts[k] += 1
    levels, running = [], 0
    for j in range(max_k, 0, -1):
        running += counts[j]
        levels.append(running)
    levels.reverse()
    return tuple(levels)


def step_shape(ks: Sequence[int], kv_tokens: int, prefill: PrefillTerms = NO_PREFILL,
               tree: bool = False) -> StepShape:
    """The StepShape of a step: one proposal length per decoding request, their summed context,
    and the prefill chunks sharing the step."""
    n = len(ks)
    top = max(ks) if ks else 0
    if not top:  # no drafts (the engine's most frequent shapes are priced here: kept short)
        return StepShape(n, 0, n, prefill.tokens, prefill.chunks, kv_tokens + prefill.context_tokens, 0, (),
                         prefill.attention_tokens2)
    if not tree and min(ks) == top:  # uniform proposal: every request drafts at every level
        return StepShape(n, n, n + n * top, prefill.tokens, prefill.chunks, kv_tokens + prefill.context_tokens,
                         top, (n,) * top, prefill.attention_tokens2)
    return shape_from_levels(n, level_counts_of(ks), kv_tokens, prefill, tree)


def uniform_shape(num_decode: int, kv_tokens: int, k: int, prefill_tokens: int = 0,
                  num_prefill: int = 0) -> StepShape:
    """Shape of a decode step where every request proposes the same k (what SmartSpec prices)."""
    return step_shape([k] * num_decode, kv_tokens, PrefillTerms(prefill_tokens, num_prefill))


__all__ = ["StepShape", "PrefillTerms", "NO_PREFILL", "prefill_terms", "shape_from_levels", "level_counts_of",
           "step_shape", "uniform_shape"]

"""vLLM's speculative-decoding summary keys, computed from a run's draft counters as vLLM computes them.

vLLM V1 counts, per request and step that carries drafts (`SpecDecodingStats.observe_draft`,
vllm/v1/spec_decode/metrics.py): num_drafts += 1, num_draft_tokens += k, num_accepted_tokens +=
accepted, and num_accepted_tokens_per_pos[i] += 1 for every i < accepted (prefix semantics: the
drafts before the first rejection). `SpecDecodingLogging.log` and the Prometheus docstring of the
same file define the derived numbers, and `vllm bench serve` writes them from the counters' deltas
over the benchmark window:

* spec_decode_acceptance_length = 1 + accepted / num_drafts (bonus token included);
* spec_decode_acceptance_rate = accepted / draft_tokens * 100 (percent);
* spec_decode_per_position_acceptance_rates[i] = accepted at position i / num_drafts
  (unconditional, so it falls with i);
* spec_decode_num_drafts, spec_decode_draft_tokens, spec_decode_accepted_tokens: the counters.

As in `vllm bench serve`, the keys are absent when no draft token was proposed (no speculation,
or a policy that never proposed), so runs without speculation keep their summary unchanged.
"""
from __future__ import annotations

from array import array
from typing import Iterable, Sequence

import numpy as np

SPEC_DECODE_KEYS = ("spec_decode_acceptance_length", "spec_decode_acceptance_rate", "spec_decode_num_drafts",
                    "spec_decode_draft_tokens", "spec_decode_accepted_tokens",
                    "spec_decode_per_position_acceptance_rates")


class PositionCounts:
    """Histogram of accepted drafts per draft (index a: drafts that accepted exactly a tokens).

    One increment per request-step with k > 0; `accepted_per_position` turns it into vLLM's
    num_accepted_tokens_per_pos (position i counts the drafts that accepted more than i). Steps in
    which every request drafted append their accepted counts to a buffer, counted in bulk when it
    fills or the histogram is read (the engine adds one step at a time)."""

    _FLUSH_AT = 1 << 13  # 64 KB per replica

    def __init__(self, max_k: int = 64):
        self._hist = [0] * (max_k + 1)
        self._unsorted = array("q")  # accepted counts of drafts not yet in _hist
        self.max_k_seen = 0  # the longest proposal counted

    @property
    def hist(self) -> list[int]:
        if self._unsorted:
            self._flush()
        return self._hist

    def add(self, ks: Sequence[int], accepted: Sequence[int]) -> None:
        top = max(ks) if ks else 0
        if not top:
            return
        if top > self.max_k_seen:
            self.max_k_seen = top
        if min(ks) > 0:  # every request drafted (fixed k, uniform policies): no per-request test
            self._unsorted.extend(accepted)
            if len(self._unsorted) >= self._FLUSH_AT:
                self._flush()
            return
        hist = self._hist
        for k, a in zip(ks, accepted):
            if k:
                hist[a] += 1

    def _flush(self) -> None:
        hist = self._hist
        for a, n in enumerate(np.bincount(np.frombuffer(self._unsorted, dtype=np.int64)).tolist()):
            hist[a] += n
        del self._unsorted[:]

    def accepted_per_position(self, positions: int) -> list[int]:
        """num_accepted_tokens_per_pos for positions 0..positions-1."""
        counts = np.asarray(self.hist[1:], dtype=np.int64)  # counts[a-1]: drafts that accepted exactly a
        tail = np.cumsum(counts[::-1])[::-1]  # tail[i]: drafts that accepted i+1 or more
        out = [int(tail[i]) if i < len(tail) else 0 for i in range(positions)]
        return out


def merge(counts: Iterable[PositionCounts]) -> PositionCounts:
    """One histogram for all replicas."""
    items = list(counts)
    size = max((len(c.hist) for c in items), default=1)
    total = PositionCounts(size - 1)
    for c in items:
        for a, n in enumerate(c.hist):
            total._hist[a] += n
        total.max_k_seen = max(total.max_k_seen, c.max_k_seen)
    return total


def spec_decode_summary(num_drafts: int, draft_tokens: int, accepted_tokens: int,
                        accepted_per_position: Sequence[int]) -> dict:
    """vLLM's six spec-decode keys, or {} when no draft token was proposed (as `vllm bench serve`)."""
    if draft_tokens <= 0:
        return {}
    return {
        "spec_decode_acceptance_length": 1.0 + accepted_tokens / num_drafts if num_drafts > 0 else None,
        "spec_decode_acceptance_rate": accepted_tokens / draft_tokens * 100.0,
        "spec_decode_num_drafts": int(num_drafts),
        "spec_decode_draft_tokens": int(draft_tokens),
        "spec_decode_accepted_tokens": int(accepted_tokens),
        "spec_decode_per_position_acceptance_rates": [n / num_drafts for n in accepted_per_position]
        if num_drafts > 0 else [],
    }


def run_spec_summary(num_drafts: int, draft_tokens: int, accepted_tokens: int, counts: PositionCounts) -> dict:
    """The keys for a finished run: per-position rates over positions 0..K-1 with K the longest proposal any
    step made (vLLM reports one per speculative token of its configuration)."""
    return spec_decode_summary(num_drafts, draft_tokens, accepted_tokens,
                               counts.accepted_per_position(counts.max_k_seen))


__all__ = ["PositionCounts", "SPEC_DECODE_KEYS", "merge", "run_spec_summary", "spec_decode_summary"]

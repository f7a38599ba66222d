"""Per-step acceptance draws: each request's rate, and the accepted drafts of every step of one replica.

Per request, alpha_r ~ Beta(mean * c, (1 - mean) * c) with concentration c (spread) around the mean of
a preset or a given rate (acceptance/rates.py); no source publishes the per-request distribution, so c
is a modelling choice (default 20, about +-0.1). Per step a request proposing k accepts the first j
drafts with probability alpha^j (i.i.d. Bernoulli per position, stopping at the first rejection),
drawn by inversion with one uniform.

Acceptance measured on real models replaces all of this when given (`--acceptance-trace`,
`--acceptance-profile`; acceptance/measured.py decides which request gets what, and
`AcceptanceDrawer` replays spans or draws from the request's process). Prompt lookup's n-gram
matches are drawn here too (`AcceptanceDrawer.mark_matches`), before the policy proposes. The
drawer also counts accepted drafts per draft for vLLM's per-position rates (acceptance/spec_metrics.py).
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np

from specdec_sim.acceptance.rates import DEFAULT_SPREAD
from specdec_sim.acceptance.spec_metrics import PositionCounts
from specdec_sim.acceptance.tree import chain_depth, sample_accepted_tree


class AlphaSampler:
    """Draws each request's true alpha around the mean: Beta(mean*c, (1-mean)*c), or exactly the mean if c == 0."""

    def __init__(self, mean_alpha: float, spread: float | None, seed: int):
        self.mean_alpha = mean_alpha
        self.spread = DEFAULT_SPREAD if spread is None else spread
        self._rng = np.random.default_rng(seed)
        self._buffer: list[float] = []

    def next_alpha(self) -> float:
        if self.spread == 0 or self.mean_alpha <= 0.0:
            return self.mean_alpha
        if not self._buffer:  # draw in blocks: one numpy call per 4096 requests
            a = self.mean_alpha * self.spread
            b = (1.0 - self.mean_alpha) * self.spread
            self._buffer = self._rng.beta(a, b, size=4096)[::-1].tolist()
        return min(self._buffer.pop(), 0.999999)


def accepted_chain(alpha: float, k: int, u: float) -> int:
    """Accepted drafts out of k under i.i.d. acceptance alpha, by inversion of one uniform u in (0, 1]."""
    if k <= 0 or alpha <= 0.0:
        return 0
    if alpha >= 1.0:
        return k
    j = int(math.log(u) / math.log(alpha))
    return j if j < k else k


def accepted_positions(rates: tuple[float, ...], k: int, rng: random.Random) -> int:
    """Accepted drafts with per-position conditional rates (last rate repeats beyond the list)."""
    accepted = 0
    last = len(rates) - 1
    while accepted < k and rng.random() < rates[min(accepted, last)]:
        accepted += 1
    return accepted


class AcceptanceDrawer:
    """Per-step accepted drafts of one replica's decoding requests, from its own seeded stream.

    mode "independent": per request, by inversion (P(accepted >= j) = alpha^j, the law of
    sequential Bernoulli draws stopping at the first rejection); "batch": one uniform shared by
    the step (the SmartSpec authors' synthetic sampler); "per-position": conditional rates per
    draft position; style "tree": acceptance/tree.py's sampler. `ngram_match_prob` is prompt lookup's
    chance that a step finds a match (`mark_matches`, before the policy proposes).

    `measured` (an acceptance trace or profile, acceptance/measured.py): requests carrying
    `spans` replay them exactly (the step whose last input token is output token i = generated - 1
    accepts min(spans[i] - 1, k)); requests carrying a `process` draw their span from it. Tree steps
    accept along the best path: at most the depth of the tree's rank-1 chain. `positions` counts
    accepted drafts per draft for vLLM's per-position rates (acceptance/spec_metrics.py)."""

    def __init__(self, mode: str, style: str, rng: random.Random, position_rates: tuple[float, ...] = (),
                 ngram_match_prob: float = 1.0, measured: bool = False):
        self.mode = mode
        self.rng = rng
        self.position_rates = position_rates
        self.tree_sampler = sample_accepted_tree if style == "tree" else None
        self.tree = style == "tree"
        self.ngram_match_prob = ngram_match_prob
        self.measured = measured
        self.positions = PositionCounts()

    def draw(self, requests: Sequence, ks: Sequence[int]) -> list[int]:
        if self.measured:
            accepted = self._draw_measured(requests, ks)
        elif self.mode != "batch" and not any(ks):  # nothing drafted: nothing to accept, no random number drawn
            return [0] * len(ks)
        else:
            accepted = self._draw(requests, ks)
        self.positions.add(ks, accepted)
        return accepted

    def _draw(self, requests: Sequence, ks: Sequence[int]) -> list[int]:
        rng = self.rng
        if self.tree_sampler is not None:
            sample = self.tree_sampler
            return [sample(r.alpha, k, rng) if k else 0 for r, k in zip(requests, ks)]
        if self.mode == "per-position" and self.position_rates:
            rates = self.position_rates
            return [accepted_positions(rates, k, rng) if k else 0 for k in ks]
        if self.mode == "batch":
            u = 1.0 - rng.random()
            return [accepted_chain(r.alpha, k, u) for r, k in zip(requests, ks)]
        rand, log = rng.random, math.log
        k = ks[0]
        if k and ks.count(k) == len(ks):  # one k for every request (fixed k, uniform policies): the same draws
            return [(j if (j := int(log(1.0 - rand()) / r.log_alpha)) < k else k) if r.alpha > 0.0 else 0
                    for r in requests]
        return [(j if (j := int(log(1.0 - rand()) / r.log_alpha)) < k else k) if k and r.alpha > 0.0 else 0
                for r, k in zip(requests, ks)]

    def _span(self, req) -> int:
        """The span of the request's step about to run (replayed, or drawn once per step from its process)."""
        spans = req.spans
        if spans is not None:
            return spans[(req.generated - 1) % len(spans)]
        return req.process.current_span(self.rng)

    def _draw_measured(self, requests: Sequence, ks: Sequence[int]) -> list[int]:
        out = []
        for req, k in zip(requests, ks):
            span = self._span(req)
            reach = k if not self.tree else chain_depth(req.alpha, k)
            acc = span - 1 if span - 1 < reach else reach
            left = req.tokens_left
            if acc >= left:  # the output ends inside the drafts (EOS): what follows it is not accepted
                acc = left - 1
            if req.process is not None:
                req.process.advance(acc + 1)
            out.append(acc)
        return out

    def mark_matches(self, requests: Sequence) -> None:
        """Prompt lookup: whether this step's n-gram lookup finds a match, per request (`req.ngram_match`), drawn
        before the policy proposes. Drawn from the replica's stream with `ngram_match_prob`; with measured
        acceptance a step matches where its span is >= 2 (a span of 1 is counted as no match; see
        acceptance/profile.py). Only the match is exposed, never the span."""
        if self.measured:
            for req in requests:
                req.ngram_match = self._span(req) >= 2
            return
        rand, prob = self.rng.random, self.ngram_match_prob
        for req in requests:
            req.ngram_match = rand() < prob


__all__ = ["AlphaSampler", "AcceptanceDrawer", "accepted_chain", "accepted_positions"]

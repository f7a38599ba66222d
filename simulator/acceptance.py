"""Acceptance process: per-request acceptance rates from published presets, and per-step accepted-token draws.

A preset names a dataset and a published mean acceptance length (AL, bonus token included) at a
known proposal length k; the per-token rate alpha is the i.i.d. value that reproduces it,
(1 - alpha^(k+1)) / (1 - alpha) = AL (Leviathan et al. 2023). Sources are rows of
`published_acceptance.csv` (see ACCEPTANCE_SOURCES.md beside this file).

Per request, alpha_r ~ Beta(mean * c, (1 - mean) * c) with concentration c (spread); no source
publishes the per-request distribution, so c is a modelling choice (default 20, about +-0.1).
Per step a request proposing k accepts the first j drafts with probability alpha^j (i.i.d.
Bernoulli per position, stopping at the first rejection), drawn by inversion with one uniform.

Acceptance measured on real models replaces all of this when given (`--acceptance-trace`,
`--acceptance-profile`; simulator/measured_acceptance.py decides which request gets what, and
`AcceptanceDrawer` replays spans or draws from the request's process). The drawer also counts
accepted drafts per draft for vLLM's per-position rates (simulator/spec_metrics.py).
"""
from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from specdec_sim.simulator.spec_metrics import PositionCounts

DEFAULT_SPREAD = 20.0


@dataclass(frozen=True)
class AcceptancePreset:
    name: str
    acceptance_length: float  # published mean tokens per step incl. bonus
    k: int  # proposal length it was measured at
    source_id: str
    description: str
    position_rates: tuple[float, ...] = field(default=())  # published unconditional per-position rates

    @property
    def alpha(self) -> float:
        return alpha_from_acceptance_length(self.acceptance_length, self.k)

    @property
    def conditional_position_rates(self) -> tuple[float, ...]:
        """P(accept position i | positions < i accepted), from the unconditional rates."""
        rates, prev = [], 1.0
        for r in self.position_rates:
            rates.append(min(1.0, r / prev) if prev > 0 else 0.0)
            prev = r
        return tuple(rates)


def alpha_from_acceptance_length(acceptance_length: float, k: int) -> float:
    """Invert AL = (1 - a^(k+1)) / (1 - a) for a by bisection (AL in [1, k+1])."""
    target = min(max(acceptance_length, 1.0), k + 1.0)
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        value = (1 - mid ** (k + 1)) / (1 - mid) if mid < 1 else k + 1.0
        lo, hi = (mid, hi) if value < target else (lo, mid)
    return (lo + hi) / 2


PRESETS: dict[str, AcceptancePreset] = {p.name: p for p in (
    AcceptancePreset("mt-bench", 2.60, 3, "vllm_pr32030",
                     "Llama-3.1-8B-Instruct + EAGLE-3, MT-bench, vLLM V1", (0.73, 0.52, 0.35)),
    AcceptancePreset("mt-bench-k7", 3.53, 7, "vllm_issue26191", "Llama-3.1-8B-Instruct + EAGLE-3, MT-bench, k=7"),
    AcceptancePreset("mt-bench-qwen3", 2.26, 3, "vllm_pr32030", "Qwen3-8B + EAGLE-3, MT-bench",
                     (0.65, 0.40, 0.20)),
    AcceptancePreset("mt-bench-eagle1", 1.89, 2, "vllm_pr16035", "Llama-3-8B-Instruct + EAGLE-1, MT-bench, k=2"),
    AcceptancePreset("humaneval", 4.573, 8, "speculators_issue1135", "Llama-3.2-1B + DSpark drafter, HumanEval"),
    AcceptancePreset("math", 4.436, 8, "speculators_issue1135", "Llama-3.2-1B + DSpark drafter, math reasoning"),
    AcceptancePreset("tool-call", 3.462, 8, "speculators_issue1135", "Llama-3.2-1B + DSpark drafter, tool calls"),
    AcceptancePreset("question", 2.646, 8, "speculators_issue1135", "Llama-3.2-1B + DSpark drafter, questions"),
    AcceptancePreset("writing", 2.636, 8, "speculators_issue1135", "Llama-3.2-1B + DSpark drafter, writing"),
    AcceptancePreset("code-edit-ngram", 4.59, 5, "vllm_pr24344", "Llama-3.1-8B n-gram prompt lookup, code edits",
                     (0.81, 0.74, 0.70, 0.68, 0.66)),
    AcceptancePreset("code-mtp", 3.45, 3, "ik_llama_pr2156", "Qwen3.6-27B MTP head, code"),
)}


class AcceptanceError(ValueError):
    """An --acceptance value that is neither a preset nor a rate in (0, 1)."""


def resolve_mean_alpha(acceptance: str | float) -> float:
    """A preset name or a number in (0, 1) -> mean per-token acceptance rate."""
    if isinstance(acceptance, (int, float)):
        value = float(acceptance)
    elif acceptance in PRESETS:
        return PRESETS[acceptance].alpha
    else:
        try:
            value = float(acceptance)
        except ValueError:
            raise AcceptanceError(f"--acceptance: {acceptance!r} is neither a number in (0, 1) nor a preset "
                                  f"({', '.join(PRESETS)})") from None
    if not 0.0 <= value < 1.0:
        raise AcceptanceError(f"--acceptance: {value} must be in [0, 1)")
    return value


def preset_position_rates(acceptance: str | float) -> tuple[float, ...]:
    preset = PRESETS.get(acceptance) if isinstance(acceptance, str) else None
    return preset.conditional_position_rates if preset else ()


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


TreeSampler = Callable[[float, int, random.Random], int]  # (alpha, nodes, rng) -> accepted tokens


class AcceptanceDrawer:
    """Per-step accepted drafts of one replica's decoding requests, from its own seeded stream.

    mode "independent": per request, by inversion (P(accepted >= j) = alpha^j, the law of
    sequential Bernoulli draws stopping at the first rejection); "batch": one uniform shared by
    the step (the SmartSpec authors' synthetic sampler); "per-position": conditional rates per
    draft position; style "tree": `tree_sampler`. `ngram_match_prob` is prompt lookup's chance
    that a step finds a match (drawn by the replica before the policy proposes).

    `measured` (an acceptance trace or profile, simulator/measured_acceptance.py): requests carrying
    `spans` replay them exactly (the step whose last input token is output token i = generated - 1
    accepts min(spans[i] - 1, k)); requests carrying a `process` draw their span from it. Tree steps
    accept along the best path: at most the depth of the tree's rank-1 chain. `positions` counts
    accepted drafts per draft for vLLM's per-position rates (simulator/spec_metrics.py)."""

    def __init__(self, mode: str, style: str, rng: random.Random, position_rates: tuple[float, ...] = (),
                 tree_sampler: TreeSampler | None = None, ngram_match_prob: float = 1.0, measured: bool = False):
        self.mode = mode
        self.rng = rng
        self.position_rates = position_rates
        self.tree_sampler = tree_sampler if style == "tree" else None
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
        """Prompt lookup with measured acceptance: a step finds a match where its span is >= 2 (a span of 1 is
        counted as no match; see traces/acceptance_profile.py). Only the match is exposed, never the span."""
        for req in requests:
            req.ngram_match = self._span(req) >= 2


@functools.lru_cache(maxsize=4096)
def _chain_depth_cached(alpha: float, nodes: int) -> int:
    from specdec_sim.policies.tree import build_tree

    tree = build_tree(alpha, nodes)
    on_chain, depth = {-1}, 0
    for i, (parent, rank) in enumerate(zip(tree.parents, tree.ranks)):
        if rank == 1 and parent in on_chain:
            on_chain.add(i)
            depth += 1
    return depth


def chain_depth(alpha: float, nodes: int) -> int:
    """Depth of the rank-1 (best) path in the best-first tree of `nodes` nodes (policies/tree.py)."""
    if nodes <= 0:
        return 0
    return _chain_depth_cached(round(min(max(alpha, 0.0), 0.999), 3), nodes)

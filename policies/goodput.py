"""Goodput arithmetic shared by every speculation policy (smartspec-reference.md sections 1.1, 1.2, 1.4, 2.1).

goodput(k) = E[tokens emitted by the step | k] / T_step(k)            (section 1.1)
E[tokens]  = sum over requests of l(alpha, k_r), l(alpha, k) = (1 - alpha^(k+1)) / (1 - alpha)  (1.2)
T_step     = CostModel.step_time_s(StepShape)                            (1.4)

Conventions shared by all policies (one place, no copies):

* A request's usable k is what the engine will actually run: capped at budget_left - 1 (max_tokens
  lets it emit no more; a server does not know the true remaining length, which only the oracle
  lengths option reveals), and 0 for prompt-lookup requests whose n-gram lookup found no match
  (section 3: unmatched requests contribute 1 token and 1 batched token). SmartSpec's code does not
  cap; it only matters for requests about to reach max_tokens.
* style "tree": k is the number of draft-tree nodes and E[tokens] = 1 + expected_accepted_tree
  (acceptance/tree.py); "draft" and "ngram" use the chain formula l(alpha, k) (`expected_tokens`, the
  one copy in acceptance/rates.py).
* The step is priced with the StepShape builder the engine uses (`costmodel.step_shape`), from
  per-request k: with every request at k and no caps this equals
  `uniform_shape(B, N_kv, k)`, which reproduces the reference's [DERIVED] k* table. For style
  "tree" the engine drafts every node in one pass of the tree heads (max_k = 1, one draft batch
  of the proposing requests), and so do we.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from specdec_sim.costmodel import (NO_PREFILL, OOM_STEP_TIME_S, CostModel, PrefillTerms, StepShape, shape_from_levels,
                                   step_shape, uniform_shape)

from specdec_sim.acceptance.rates import best_uniform_k as best_k_by_goodput
from specdec_sim.acceptance.rates import expected_tokens
from specdec_sim.acceptance.tree import tree_node_gains

OOM_FACTOR = 1.1  # SmartSpec's memory guard: B*(seq_len+k+1)*1.1 must fit (section 1.4)


def step_tokens(alpha: float, k: int, style: str = "draft") -> float:
    """Expected tokens one request emits in a step proposing k (bonus or correction token included)."""
    if k <= 0:
        return 1.0
    if style == "tree":
        return 1.0 + float(sum(tree_node_gains(alpha, k)))
    return expected_tokens(alpha, k)


def usable_k(request, k: int, style: str) -> int:
    """The k the engine will run for this request: capped by budget_left - 1, 0 for unmatched n-gram lookups."""
    if style == "ngram" and not request.ngram_match:
        return 0
    return max(0, min(k, request.budget_left - 1))


def running_size(batch) -> int:
    """vLLM's running-queue size: requests running this step (decoding plus prefill chunks)."""
    return batch.size + batch.num_prefill


@dataclass
class ShapeAggregates:
    """StepShape fields kept as running sums so one more draft token re-prices in O(max_k), not O(B)."""

    num_decode: int
    kv_tokens: int
    prefill_tokens: int = 0
    num_prefill: int = 0
    tree: bool = False  # style "tree": one draft pass of the proposing requests drafts every node
    num_proposing: int = 0
    draft_tokens: int = 0
    level_counts: list[int] = field(default_factory=list)  # [j-1] = requests with k >= j

    @classmethod
    def of_batch(cls, batch, include_prefill: bool) -> "ShapeAggregates":
        return cls(num_decode=batch.size, kv_tokens=batch.kv_tokens,
                   prefill_tokens=batch.prefill_tokens if include_prefill else 0,
                   num_prefill=batch.num_prefill if include_prefill else 0, tree=batch.style == "tree")

    def add_token(self, old_k: int) -> None:
        """Request at old_k proposes one more token."""
        if old_k == 0:
            self.num_proposing += 1
        if len(self.level_counts) <= old_k:
            self.level_counts.extend([0] * (old_k + 1 - len(self.level_counts)))
        self.level_counts[old_k] += 1
        self.draft_tokens += 1

    def remove_token(self, old_k: int) -> None:
        """Request at old_k (>= 1) proposes one token fewer."""
        self.level_counts[old_k - 1] -= 1
        self.draft_tokens -= 1
        if old_k == 1:
            self.num_proposing -= 1

    def max_k(self) -> int:
        k = len(self.level_counts)
        while k > 0 and self.level_counts[k - 1] == 0:
            k -= 1
        return k

    def shape(self, force_levels: int = 0) -> StepShape:
        """The step's StepShape; force_levels=L prices L draft levels and speculation as paid for."""
        levels = max(self.max_k(), force_levels)
        counts = tuple(self.level_counts[j] if j < len(self.level_counts) else 0 for j in range(levels))
        proposing = self.num_proposing
        if force_levels:
            counts = tuple(max(1, c) for c in counts)
            proposing = max(1, proposing)
        return shape_from_levels(self.num_decode, counts, self.kv_tokens,
                                 PrefillTerms(self.prefill_tokens, self.num_prefill), self.tree,
                                 num_proposing=proposing, draft_tokens=self.draft_tokens)


def batch_shape(batch, ks: Sequence[int], include_prefill: bool = False) -> StepShape:
    """StepShape of running `batch` with per-request proposal lengths ks. A policy decides before the
    prefill chunks are cut, so it knows their total but not their contexts."""
    prefill = PrefillTerms(batch.prefill_tokens, batch.num_prefill) if include_prefill else NO_PREFILL
    return step_shape(ks, batch.kv_tokens, prefill, batch.style == "tree")


@dataclass(frozen=True)
class Goodput:
    tokens: float  # expected tokens emitted by the step
    time_s: float  # predicted step time

    @property
    def value(self) -> float:
        return self.tokens / self.time_s if self.time_s > 0 else 0.0

    @property
    def oom(self) -> bool:
        return self.time_s >= OOM_STEP_TIME_S


def uniform_ks(batch, k: int) -> list[int]:
    return [usable_k(r, k, batch.style) for r in batch.requests]


def goodput_of_ks(batch, ks: Sequence[int], alphas: Sequence[float] | float,
                  include_prefill: bool = False) -> Goodput:
    """Expected tokens and predicted time of a step with per-request ks (alphas: one per request or global)."""
    if isinstance(alphas, (int, float)):
        alphas = [float(alphas)] * len(ks)
    tokens = sum(step_tokens(a, k, batch.style) for a, k in zip(alphas, ks))
    return Goodput(tokens, batch.cost.step_time_s(batch_shape(batch, ks, include_prefill)))


def uniform_goodput(batch, alpha: float, k: int, include_prefill: bool = False) -> Goodput:
    """Goodput when every request proposes k (after the engine's caps); section 1.1."""
    return goodput_of_ks(batch, uniform_ks(batch, k), alpha, include_prefill)


def kv_would_oom(batch, k: int) -> bool:
    """SmartSpec's guard (section 1.4): B*(seq_len+k+1)*1.1 > KV capacity (free + held by the batch)."""
    capacity = batch.free_kv_tokens + batch.kv_tokens
    return OOM_FACTOR * (batch.kv_tokens + batch.size * (k + 1)) > capacity


def early_stop_scan(goodput_of: Callable[[int], float | None], k_max: int, zero_bias: float = 1.0) -> int:
    """Section 2.1's scan: k = 0..k_max, k=0 goodput times zero_bias, stop at the first non-increase.

    goodput_of(k) returns None for the OOM sentinel, which ends the scan."""
    best_k, best_gp = 0, -1.0
    for k in range(k_max + 1):
        gp = goodput_of(k)
        if gp is None:
            break
        if k == 0:
            gp *= zero_bias
        if gp > best_gp:
            best_k, best_gp = k, gp
        else:
            break
    return best_k


def scan_uniform_k(batch, alpha: float, k_max: int, zero_bias: float = 1.0, include_prefill: bool = False,
                   oom_guard: bool = False) -> int:
    """Best uniform k for the batch by section 2.1's early-stop scan."""
    def goodput_of(k: int) -> float | None:
        if oom_guard and kv_would_oom(batch, k):
            return None
        gp = uniform_goodput(batch, alpha, k, include_prefill)
        return None if gp.oom else gp.value
    return early_stop_scan(goodput_of, k_max, zero_bias)


def uniform_shape_goodput(cost: CostModel, alpha: float, batch_size: int, context_tokens: int, k: int,
                          style: str = "draft") -> float:
    """Goodput of B identical requests of context_tokens at uniform k (the reference's k* tables)."""
    shape = uniform_shape(batch_size, batch_size * context_tokens, k)
    return batch_size * step_tokens(alpha, k, style) / cost.step_time_s(shape)


def best_uniform_k(cost: CostModel, alpha: float, batch_size: int, context_tokens: int, max_k: int,
                   style: str = "draft", candidates: Sequence[int] | None = None) -> int:
    """argmax over k in `candidates` (default 0..max_k) of uniform_shape_goodput (ties go to the smaller k)."""
    def step_time_s(k: int) -> float:
        return cost.step_time_s(uniform_shape(batch_size, batch_size * context_tokens, k))

    return best_k_by_goodput(step_time_s, alpha, batch_size, range(max_k + 1) if candidates is None else candidates,
                             lambda a, k: step_tokens(a, k, style))


def has_knee(cost: CostModel) -> bool:
    """Whether marginal step times change with the batch (a compute-knee hinge in the calibration)."""
    cal = cost.calibration
    draft = cal.draft.forward
    return bool(cal.target.after_knee_ms or (draft is not None and draft.after_knee_ms))


def forced_marginal_times(agg: ShapeAggregates, cost: CostModel, levels: int,
                          deltas: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """(T, dT of a first draft token of a request, dT of a further token) at agg priced with `levels` forced.

    Pass `deltas` (dT_first, dT_next) from an earlier call to re-price only T (linear cost models)."""
    base = agg.shape(force_levels=levels)
    t0 = cost.step_time_s(base)
    if deltas is not None:
        return t0, deltas[0], deltas[1]
    sizes = base.draft_batch_sizes
    more = (sizes[0] + 1,) + sizes[1:] if sizes else sizes
    t_next = cost.step_time_s(replace(base, verify_tokens=base.verify_tokens + 1,
                                      draft_batch_sizes=sizes if agg.tree else more))
    t_first = cost.step_time_s(replace(base, verify_tokens=base.verify_tokens + 1, draft_batch_sizes=more,
                                       num_proposing=base.num_proposing + 1))
    return t0, max(t_first - t0, 1e-12), max(t_next - t0, 1e-12)


__all__ = ["expected_tokens", "step_tokens", "usable_k", "running_size", "ShapeAggregates", "batch_shape", "Goodput",
           "uniform_ks", "goodput_of_ks", "uniform_goodput", "kv_would_oom", "early_stop_scan", "scan_uniform_k",
           "uniform_shape_goodput", "best_uniform_k", "forced_marginal_times", "has_knee", "OOM_FACTOR"]

"""Per-request k by marginal goodput (smartspec-reference.md section 6.2 items 1-2; beyond the paper).

`allocate_greedy` gives draft tokens one at a time to the request with the highest marginal
goodput dgen/dT, dgen_r = alpha_r^(k_r+1) (the next tree node's path probability for style
"tree"), dT from the cost model, while the step's total goodput (expected tokens / step time)
still rises. Draft levels have a fixed price (one more sequential draft pass, TurboSpec's
d_k term), so a pure one-token-at-a-time greedy would stop in front of every such jump. We
therefore run it per draft depth L = 1..k_max with the first L levels (and the switch to
speculation) priced as already paid: with those fixed costs sunk, gains are concave and the
cost linear, so the greedy is the exact ratio optimum (take every token whose dgen/dT beats
the current goodput). Levels are visited in increasing L, keeping the allocation and giving
back tokens that no longer beat the goodput, so the whole search costs O(B k_max log B). Each
depth's result is priced exactly (unforced shape) and the best, including k = 0 for all, wins.
Step-time deltas are O(1): finite differences of the cost model at the aggregate StepShape
(policies/goodput.py ShapeAggregates), taken once per decision for a linear calibration and
refreshed at every depth when the calibration has a compute knee.

* `goodput-greedy`: alpha_r = Beta posterior mean with the global estimate m as prior mean and
  `prior` pseudo-trials (default 10) as prior strength: alpha_r = (a_r + s*m)/(n_r + s), a_r
  accepted drafts and n_r trials (accepted + rejections, the per-position estimate of
  policies/estimators.py). m itself is the pooled acceptance of the last `window` drafting steps,
  shrunk the same way toward `initial_alpha` (PooledWindow), so that an unlucky first step cannot
  drive m to 0 and k to 0 for good. Decided every step. For style "tree" the per-position ratio
  counts any accepted node, so it slightly overstates the top-1 alpha of acceptance/tree.py.
* `oracle`: the same allocation with each request's TRUE alpha. Not implementable; an upper
  bound for analysis only.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Sequence

from specdec_sim.policies.estimators import PerRequestStats, PooledWindow, check_counting
from specdec_sim.policies.goodput import ShapeAggregates, forced_marginal_times, has_knee, usable_k
from specdec_sim.acceptance.tree import tree_node_gains


@dataclass
class Allocation:
    ks: list[int]
    tokens: float
    time_s: float

    @property
    def goodput(self) -> float:
        return self.tokens / self.time_s if self.time_s > 0 else 0.0


def gain_table(alphas: Sequence[float], caps: Sequence[int], style: str) -> list[list[float]]:
    """gains[r][j-1]: expected tokens added by request r's j-th draft token (j <= caps[r])."""
    if style == "tree":
        return [list(tree_node_gains(round(a, 3), c)) if c > 0 else [] for a, c in zip(alphas, caps)]
    table = []
    for a, c in zip(alphas, caps):
        row, p = [], 1.0
        for _ in range(c):
            p *= a
            row.append(p)
        table.append(row)
    return table


class _GreedySearch:
    """Greedy state kept across depths: allocation, aggregates, and the add/give-back heaps.

    Heap entries are (key, r, k) and are valid only while ks[r] == k (lazy deletion). The heaps
    are rebuilt only when the marginal step times change (a knee in the cost model); otherwise a
    new depth just re-admits the requests that were stopped by the previous depth."""

    def __init__(self, batch, gains: list[list[float]], caps: list[int], include_prefill: bool, budget: int):
        self.cost = batch.cost
        self.linear = not has_knee(batch.cost)  # marginal step times are then the same at every depth
        self.gains, self.caps, self.budget = gains, caps, budget
        self.ks = [0] * batch.size
        self.tokens = float(batch.size)
        self.agg = ShapeAggregates.of_batch(batch, include_prefill)
        self.dt: tuple[float, float] | None = None
        self.add: list[tuple[float, int, int]] = []
        self.rem: list[tuple[float, int, int]] = []
        self.blocked: list[int] = []  # requests stopped by the depth limit
        self.ratios: list[list[float]] = []

    def _set_ratios(self, dt_first: float, dt_next: float) -> None:
        """ratios[r][j-1] = marginal goodput dgen/dT of request r's j-th token."""
        self.dt = (dt_first, dt_next)
        self.ratios = [[g / (dt_first if j == 0 else dt_next) for j, g in enumerate(row)] for row in self.gains]

    def _rebuild(self, depth: int) -> None:
        ks, caps, ratios = self.ks, self.caps, self.ratios
        self.add = [(-ratios[r][ks[r]], r, ks[r]) for r in range(len(ks)) if ks[r] < depth and ks[r] < caps[r]]
        self.rem = [(ratios[r][ks[r] - 1], r, ks[r]) for r in range(len(ks)) if ks[r] > 0]
        heapq.heapify(self.add)
        heapq.heapify(self.rem)
        self.blocked = []

    def _readmit(self, depth: int) -> None:
        for r in self.blocked:
            k = self.ks[r]
            if k == depth - 1 and k < self.caps[r]:
                heapq.heappush(self.add, (-self.ratios[r][k], r, k))
        self.blocked = []

    def run_depth(self, depth: int) -> None:
        """Add/give back single tokens until none beats the goodput, `depth` levels priced as paid."""
        reuse = self.dt if (self.dt is not None and self.linear) else None
        time_s, dt_first, dt_next = forced_marginal_times(self.agg, self.cost, depth, reuse)
        if self.dt is None or abs(dt_first - self.dt[0]) > 1e-9 * dt_first \
                or abs(dt_next - self.dt[1]) > 1e-9 * dt_next:
            self._set_ratios(dt_first, dt_next)
            self._rebuild(depth)
        else:
            self._readmit(depth)
        ks, gains, ratios, caps, agg = self.ks, self.gains, self.ratios, self.caps, self.agg
        add, rem, blocked, budget = self.add, self.rem, self.blocked, self.budget
        push, pop = heapq.heappush, heapq.heappop
        tokens = self.tokens
        while True:
            lam = tokens / time_s
            while add and ks[add[0][1]] != add[0][2]:
                pop(add)
            while rem and ks[rem[0][1]] != rem[0][2]:
                pop(rem)
            if add and -add[0][0] > lam and agg.draft_tokens < budget:
                _, r, k = pop(add)
                tokens += gains[r][k]
                time_s += dt_first if k == 0 else dt_next
                agg.add_token(k)
                k += 1
                ks[r] = k
                if k < caps[r]:
                    if k < depth:
                        push(add, (-ratios[r][k], r, k))
                    else:
                        blocked.append(r)
                push(rem, (ratios[r][k - 1], r, k))
            elif rem and rem[0][0] < lam:
                _, r, k = pop(rem)
                tokens -= gains[r][k - 1]
                time_s -= dt_first if k == 1 else dt_next
                agg.remove_token(k)
                ks[r] = k - 1
                push(add, (-ratios[r][k - 1], r, k - 1))
                if k > 1:
                    push(rem, (ratios[r][k - 2], r, k - 1))
            else:
                self.tokens = tokens
                return

    def allocation(self) -> Allocation:
        return Allocation(list(self.ks), self.tokens, self.cost.step_time_s(self.agg.shape()))


def allocate_greedy(batch, alphas: Sequence[float], k_max: int, include_prefill: bool = True,
                    token_budget: int | None = None) -> Allocation:
    """Per-request ks maximising predicted step goodput (see the module docstring)."""
    caps = [usable_k(r, k_max, batch.style) for r in batch.requests]
    gains = gain_table(alphas, caps, batch.style)
    search = _GreedySearch(batch, gains, caps, include_prefill, (1 << 62) if token_budget is None else token_budget)
    best = search.allocation()
    for depth in range(1, max(caps, default=0) + 1):
        search.run_depth(depth)
        current = search.allocation()
        if current.goodput > best.goodput:
            best = current
        if search.agg.max_k() < depth:
            break
    return best


def lookahead_budget(batch) -> int:
    """Draft tokens that still fit in the free KV slots after every request's base token."""
    return max(0, batch.free_kv_tokens - batch.size)


@dataclass
class GoodputGreedy:
    """`goodput-greedy`: per-request k by marginal goodput, Bayesian per-request alpha (section 6.2)."""

    k_max: int | None = None
    prior: float = 10.0  # prior strength in pseudo-trials
    initial_alpha: float = 0.7
    window: int = 100
    counting: str = "position"
    name: str = field(default="goodput-greedy", init=False)

    def __post_init__(self) -> None:
        check_counting(self.counting)
        if self.k_max is not None and not 0 <= self.k_max <= 64:
            raise ValueError("goodput-greedy: k_max must be in 0..64")
        if not 0.0 <= self.prior <= 1e9:
            raise ValueError("goodput-greedy: prior must be in [0, 1e9]")
        if not 0.0 <= self.initial_alpha <= 1.0:
            raise ValueError("goodput-greedy: initial_alpha must be in [0, 1]")
        if not 1 <= self.window <= 10**6:
            raise ValueError("goodput-greedy: window must be in 1..1000000")
        self.global_alpha = PooledWindow(window=self.window, initial=self.initial_alpha, prior=self.prior,
                                         counting=self.counting)
        self.stats = PerRequestStats(window=self.window)
        self.last: Allocation | None = None

    def request_alphas(self, batch) -> list[float]:
        m = self.global_alpha.alpha
        return [self.stats.posterior_mean(r.request_id, m, self.prior, self.counting) for r in batch.requests]

    def propose(self, batch) -> list[int]:
        k_max = batch.max_k if self.k_max is None else min(self.k_max, batch.max_k)
        self.last = allocate_greedy(batch, self.request_alphas(batch), k_max,
                                    token_budget=lookahead_budget(batch))
        return self.last.ks

    def observe(self, outcome) -> None:
        self.global_alpha.update(outcome)
        self.stats.update(outcome, self.counting)

    def estimated_alpha(self) -> float | None:
        return self.global_alpha.alpha


@dataclass
class Oracle:
    """`oracle`: greedy allocation with each request's TRUE alpha — an upper bound, not a real policy."""

    k_max: int | None = None
    name: str = field(default="oracle", init=False)

    def __post_init__(self) -> None:
        if self.k_max is not None and not 0 <= self.k_max <= 64:
            raise ValueError("oracle: k_max must be in 0..64")

    def propose(self, batch) -> list[int]:
        k_max = batch.max_k if self.k_max is None else min(self.k_max, batch.max_k)
        alphas = [r.alpha for r in batch.requests]
        return allocate_greedy(batch, alphas, k_max, token_budget=lookahead_budget(batch)).ks

    def observe(self, outcome) -> None:
        pass

    def estimated_alpha(self) -> float | None:
        return None


__all__ = ["Allocation", "allocate_greedy", "gain_table", "GoodputGreedy", "Oracle", "lookahead_budget"]

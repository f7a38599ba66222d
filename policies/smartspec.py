"""SmartSpec V0 (`dsd` branch): one goodput-optimal k for the whole batch.

smartspec-reference.md sections 2.1 (draft model), 2.2 (prompt lookup), 1.3 (alpha), 1.4 (OOM guard):

* alpha: global, init 0.7, alpha <- 0.85*alpha + 0.15*rho after every speculative step, rho the
  LIFETIME cumulative acceptance ratio (policies/estimators.py; `counting=position` is V0's
  per-position count, the default; `counting=prefix` is accepted/drafted). `alpha=` pins it.
* Every `interval` (20) DSD steps: scan k = 0..k_max with early stop, k=0 goodput x `bias` (1.1),
  OOM sentinel stops the scan (1.1*B*(seq_len+k+1) > KV capacity; `oom_guard=0` disables it).
  Reused in between. With the guard, speculation is off whenever the KV cache is over ~91 % full.
* A k = 0 decision sets the threshold to the running-queue size; steps at or above it are
  disabled (k = 0, no evaluation); after `sticky_steps` (100) disabled steps the threshold resets
  to infinity, and it clears at once when the running size drops below it. [INFERRED] When the
  threshold clears we re-decide at once instead of reusing the stale k = 0 (the interval counter
  counts DSD steps only).
* Prefill tokens are not priced: V0 never speculates in steps that carry prefill.
* style "ngram" (section 2.2): propose, per matched request, the verify length v chosen by the
  same scan with gen = l(alpha, v)*n_match + (B - n_match) (the engine's caps drop unmatched
  requests to 0). The proposal of 8 is then truncated to v (modify_proposals), so only v is run.
  If the last 40 recorded verify lengths were all 0, propose 0 without evaluating; after 100
  consecutive zeros the history is cleared (re-probe). The queue-size threshold is not used.
* style "tree": the same scan over the number of tree nodes (policies/tree.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from specdec_sim.policies.estimators import LifetimeEma, check_counting
from specdec_sim.policies.goodput import running_size, scan_uniform_k

NGRAM_ZERO_STOP = 40  # 2 x 20 recorded zero verify lengths: stop proposing
NGRAM_ZERO_CLEAR = 100  # consecutive zeros after which the history is cleared


@dataclass
class SmartSpec:
    k_max: int | None = None  # None: the engine's batch.max_k
    interval: int = 20
    bias: float = 1.1
    sticky_steps: int = 100
    alpha: float | None = None  # fix alpha (no online update)
    counting: str = "position"
    oom_guard: bool = True  # section 1.4's 1.1x KV headroom check (oom_guard=0 to study its effect)
    name: str = field(default="smartspec", init=False)

    def __post_init__(self) -> None:
        check_counting(self.counting)
        if self.k_max is not None and not 0 <= self.k_max <= 64:
            raise ValueError("smartspec: k_max must be in 0..64")
        if not 1 <= self.interval <= 10**9 or not 1 <= self.sticky_steps <= 10**9:
            raise ValueError("smartspec: interval and sticky_steps must be >= 1")
        if not (math.isfinite(self.bias) and self.bias > 0):
            raise ValueError("smartspec: bias must be a positive number")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ValueError("smartspec: alpha must be in [0, 1]")
        self.estimator = LifetimeEma(alpha=0.7 if self.alpha is None else self.alpha,
                                     counting=self.counting, fixed=self.alpha is not None)
        self.last_k = 0
        self.dsd_steps = 0  # steps that ran the DSD path (interval counter)
        self.threshold = math.inf  # sticky k = 0: disabled while running size >= threshold
        self.disabled_steps = 0
        self.zero_run = 0  # n-gram: consecutive recorded zero verify lengths
        self.decisions = 0

    # ---- decisions -------------------------------------------------------------------------
    def _k_max(self, batch) -> int:
        return batch.max_k if self.k_max is None else min(self.k_max, batch.max_k)

    def decide(self, batch) -> int:
        """Section 2.1 scan with the current alpha (no caching, no stickiness)."""
        self.decisions += 1
        return scan_uniform_k(batch, self.estimator.alpha, self._k_max(batch), zero_bias=self.bias,
                              include_prefill=False, oom_guard=self.oom_guard)

    def _clear_sticky(self) -> None:
        self.threshold = math.inf
        self.disabled_steps = 0
        self.dsd_steps = 0  # re-decide at the next DSD step

    def _draft_k(self, batch) -> int:
        size = running_size(batch)
        if size >= self.threshold:
            self.disabled_steps += 1
            if self.disabled_steps >= self.sticky_steps:
                self._clear_sticky()
            return 0
        if self.threshold != math.inf:  # load dropped below the threshold
            self._clear_sticky()
        if self.dsd_steps % self.interval == 0:
            self.last_k = self.decide(batch)
            if self.last_k == 0:
                self.threshold = size
                self.disabled_steps = 0
        self.dsd_steps += 1
        return self.last_k

    def _ngram_k(self, batch) -> int:
        if NGRAM_ZERO_STOP <= self.zero_run:
            v = 0
        elif not any(r.ngram_match for r in batch.requests):
            v = 0
        else:
            if self.dsd_steps % self.interval == 0:
                self.last_k = self.decide(batch)
            self.dsd_steps += 1
            v = self.last_k
        self.zero_run = self.zero_run + 1 if v == 0 else 0
        if self.zero_run >= NGRAM_ZERO_CLEAR:
            self.zero_run = 0
            self.dsd_steps = 0  # history cleared: re-probe with a fresh decision
        return v

    # ---- Policy protocol -------------------------------------------------------------------
    def propose(self, batch) -> list[int]:
        k = self._ngram_k(batch) if batch.style == "ngram" else self._draft_k(batch)
        k = min(k, batch.max_k)
        return [k] * batch.size

    def observe(self, outcome) -> None:
        self.estimator.update(outcome)

    def estimated_alpha(self) -> float | None:
        return self.estimator.alpha


__all__ = ["SmartSpec", "NGRAM_ZERO_STOP", "NGRAM_ZERO_CLEAR"]

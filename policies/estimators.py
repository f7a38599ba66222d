"""Online estimates of the token acceptance rate alpha (smartspec-reference.md section 1.3, 6.2 item 2).

Two ways to turn a step's outcome into an acceptance ratio ("counting"):

* "prefix": accepted / drafted, where accepted is the accepted prefix (what the engine reports,
  and what the V1 AutoTuner uses: accepted_r = len(generated_r) - 1). Under i.i.d. acceptance
  this is biased low for k > 1 (E[accepted]/k < alpha).
* "position": the per-position acceptance rate that vLLM V0's rejection sampler counted
  (`num_accepted_tokens += accepted.sum()` over every position, causal or not [C-RS]). Only the
  prefix is observed here. Pooled counts (SmartSpec's lifetime ratio, goodput-greedy) use the
  maximum-likelihood equivalent accepted / (accepted + rejections), a rejection being a request
  that accepted fewer than it drafted. Per-step ratios (TurboSpec's window) are too small for
  that ratio estimator (at B = 1, k = 2, alpha = 0.5 its mean is 0.375), so they impute V0's
  count: rho_step = (accepted + unobserved * alpha_hat) / drafted, where unobserved are the
  positions after a rejection (each accepted with probability alpha in V0's independent count)
  and alpha_hat is the current estimate. Given alpha_hat = alpha this is unbiased.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

COUNTINGS = ("position", "prefix")


@dataclass
class StepCounts:
    accepted: int = 0
    drafted: int = 0
    rejections: int = 0
    unobserved: int = 0  # draft positions after the first rejection

    def ratio(self, counting: str) -> float | None:
        """Acceptance ratio under `counting`, None when nothing was drafted (the reference skips NaN)."""
        trials = self.drafted if counting == "prefix" else self.accepted + self.rejections
        if self.drafted <= 0 or trials <= 0:
            return None
        return self.accepted / trials

    def add(self, accepted: int, drafted: int) -> None:
        if drafted <= 0:
            return
        self.accepted += accepted
        self.drafted += drafted
        self.rejections += 1 if accepted < drafted else 0
        self.unobserved += max(0, drafted - accepted - 1)

    def imputed_ratio(self, alpha_hat: float) -> float | None:
        """V0's per-position count estimated from the prefix: (accepted + unobserved*alpha_hat) / drafted."""
        if self.drafted <= 0:
            return None
        return (self.accepted + self.unobserved * alpha_hat) / self.drafted

    def merge(self, other: "StepCounts") -> None:
        self.accepted += other.accepted
        self.drafted += other.drafted
        self.rejections += other.rejections
        self.unobserved += other.unobserved


def outcome_counts(outcome) -> StepCounts:
    """Totals over the requests that drafted in this step."""
    counts = StepCounts()
    for proposed, accepted in zip(outcome.proposed, outcome.accepted):
        counts.add(accepted, proposed)
    return counts


def check_counting(counting: str) -> str:
    if counting not in COUNTINGS:
        raise ValueError(f"counting must be one of {', '.join(COUNTINGS)}, not {counting!r}")
    return counting


@dataclass
class LifetimeEma:
    """SmartSpec V0 (section 1.3): alpha <- 0.85*alpha + 0.15*rho after each speculative step,
    rho = the LIFETIME cumulative ratio since start; init 0.7; `fixed` pins alpha."""

    alpha: float = 0.7
    weight: float = 0.85
    counting: str = "position"
    fixed: bool = False
    lifetime: StepCounts = field(default_factory=StepCounts)

    def update(self, outcome, spec_step: bool = False) -> None:
        """Merge the step's counts and move alpha toward the lifetime ratio. A step that drafted
        nothing is skipped unless `spec_step`: V0 calls set_token_acceptance_rate after every step of
        its speculative path (an n-gram step verifying 0 included) with the unchanged lifetime ratio,
        skipping it only while that ratio is NaN (nothing drafted since start) [C-SDW]."""
        step = outcome_counts(outcome)
        if step.drafted > 0:
            self.lifetime.merge(step)
        elif not spec_step:
            return
        rho = self.lifetime.ratio(self.counting)
        if rho is not None and not self.fixed:
            self.alpha = self.weight * self.alpha + (1.0 - self.weight) * rho


@dataclass
class WindowMean:
    """TurboSpec V1 (section 1.3): alpha = plain mean of the last `window` per-step ratios
    rho_step = sum accepted / sum drafted over requests that drafted; `initial` before any history."""

    window: int = 100
    initial: float = 0.5
    counting: str = "position"
    history: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.history = deque(self.history, maxlen=self.window)

    @property
    def alpha(self) -> float:
        return sum(self.history) / len(self.history) if self.history else self.initial

    def push(self, rho: float | None) -> None:
        if rho is not None:
            self.history.append(rho)

    def update(self, outcome) -> None:
        step = outcome_counts(outcome)
        self.push(step.ratio("prefix") if self.counting == "prefix" else step.imputed_ratio(self.alpha))


@dataclass
class PooledWindow:
    """Token-weighted acceptance over the last `window` drafting steps, shrunk toward `initial` by
    `prior` pseudo-trials: alpha = (A + prior*initial) / (trials + prior). The shrinkage keeps one
    unlucky early step from collapsing the estimate to 0 (after which k = 0 would yield no samples)."""

    window: int = 100
    initial: float = 0.7
    prior: float = 10.0
    counting: str = "position"
    steps: deque = field(default_factory=deque)
    accepted: int = 0
    trials: int = 0

    @property
    def alpha(self) -> float:
        return (self.accepted + self.prior * self.initial) / (self.trials + self.prior) \
            if self.trials + self.prior > 0 else self.initial

    def update(self, outcome) -> None:
        step = outcome_counts(outcome)
        if step.drafted <= 0:
            return
        trials = step.drafted if self.counting == "prefix" else step.accepted + step.rejections
        self.steps.append((step.accepted, trials))
        self.accepted += step.accepted
        self.trials += trials
        if len(self.steps) > self.window:
            old_accepted, old_trials = self.steps.popleft()
            self.accepted -= old_accepted
            self.trials -= old_trials


@dataclass
class PerRequestStats:
    """Per-request counters keyed by request_id, pruned when a request is not seen for `ttl` steps."""

    ttl: int = 1000
    counts: dict = field(default_factory=dict)
    windows: dict = field(default_factory=dict)
    last_seen: dict = field(default_factory=dict)
    window: int = 100
    _steps: int = 0

    def update(self, outcome, counting: str) -> None:
        self._steps += 1
        for req, proposed, accepted in zip(outcome.requests, outcome.proposed, outcome.accepted):
            if proposed <= 0:
                continue
            rid = req.request_id
            self.counts.setdefault(rid, StepCounts()).add(accepted, proposed)
            step = StepCounts()
            step.add(accepted, proposed)
            self.windows.setdefault(rid, deque(maxlen=self.window)).append(step.ratio(counting))
            self.last_seen[rid] = self._steps
        if self._steps % self.ttl == 0:
            self._prune()

    def _prune(self) -> None:
        stale = [rid for rid, seen in self.last_seen.items() if self._steps - seen >= self.ttl]
        for rid in stale:
            self.counts.pop(rid, None)
            self.windows.pop(rid, None)
            self.last_seen.pop(rid, None)

    def window_mean(self, request_id: int, default: float) -> float:
        history = self.windows.get(request_id)
        return sum(history) / len(history) if history else default

    def posterior_mean(self, request_id: int, prior_mean: float, prior_strength: float, counting: str) -> float:
        """Beta posterior mean of the request's alpha, prior Beta(s*m, s*(1-m)) with m the global estimate."""
        c = self.counts.get(request_id)
        if c is None:
            return prior_mean
        trials = c.drafted if counting == "prefix" else c.accepted + c.rejections
        return (c.accepted + prior_strength * prior_mean) / (trials + prior_strength)


__all__ = ["COUNTINGS", "StepCounts", "outcome_counts", "check_counting", "LifetimeEma", "WindowMean",
           "PooledWindow", "PerRequestStats"]

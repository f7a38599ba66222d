"""TurboSpec V1 AutoTuner (`req-dsd` branch): windowed alpha, 200-step decisions, max-k re-probe; as released.

smartspec-reference.md sections 2.3 (decision), 1.3 (alpha), 1.4 (mixed-batch cost), 5.1;
docs/policy-variants.md lists the as-released defaults against the options.

* alpha = plain mean of the last `window` (100) step ratios rho_step over requests that drafted;
  0.5 before any history. Default `counting=prefix`: the V1 code's rho_step = sum accepted / sum
  drafted with accepted_r = len(generated_r) - 1 [C-AT] update_history_and_get_acceptance_rates.
  That ratio is biased low for k > 1 (E[accepted]/k < alpha) and, fed back into l(alpha, k), can
  collapse k to 0 at low acceptance (k = 0 steps give no samples). The improved variant
  `counting=position` estimates the per-position alpha that l(alpha, k) assumes, as V0's rejection
  sampler counted it, imputing positions after a rejection at the current estimate
  (policies/estimators.py).
* At t % interval == 0 (interval 200, t counting the decode steps the policy is asked about): scan
  v = 0..k_max with early stop, NO k=0 bias, pricing the whole step including prefill chunks
  (batch.prefill_tokens: N_sched_wo_spec). V1 skips the decision when no request has drafts
  (prompt lookup with no match) and keeps the last v; so do we. Between decisions every request
  proposes the last v.
* Re-probe, `reprobe=truncate` (default, as released): V1 sets the proposer to k_max for the drafts
  of the decision step ((t+1) % interval == 0 at the end of the step before) and truncates them to
  the v it picks, so the scan can cover 0..k_max and only v is verified. Here draft and verify
  length are one k, so the decision step proposes v; the (k_max - v) extra draft passes of that one
  step are not charged. `reprobe=verify` (before issue 11): the step before each decision proposes
  AND verifies k_max (its KV slots too), so the window sees long drafts; at a large batch that step
  is several times a normal one. `reprobe=0`/`1` read as truncate/verify.
* per_request=1: k_r = round(v* * B * alpha_r / sum_j alpha_j), alpha_r the request's windowed
  mean of its own step ratios (the global alpha until it has history), clamped to 0..k_max.
* Not modelled: V1's step counter also counts steps without decodes (the policy is not called there).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from specdec_sim.policies.estimators import PerRequestStats, WindowMean, check_counting
from specdec_sim.policies.goodput import scan_uniform_k


REPROBE_MODES = ("truncate", "verify")
_REPROBE_ALIASES = {"0": "truncate", "false": "truncate", "no": "truncate",
                    "1": "verify", "true": "verify", "yes": "verify"}


def reprobe_mode(value) -> str:
    """`truncate` or `verify` from a mode name, a bool or 0/1 (the pre-issue-11 boolean option)."""
    if isinstance(value, bool):
        return "verify" if value else "truncate"
    text = _REPROBE_ALIASES.get(str(value).strip().lower(), str(value).strip().lower())
    if text not in REPROBE_MODES:
        raise ValueError(f"turbospec: reprobe must be one of {', '.join(REPROBE_MODES)} (or 0/1), not {value!r}")
    return text


@dataclass
class TurboSpec:
    k_max: int | None = None
    interval: int = 200
    window: int = 100
    initial_alpha: float = 0.5
    per_request: bool = False
    counting: str = "prefix"
    reprobe: str = "truncate"
    name: str = field(default="turbospec", init=False)

    def __post_init__(self) -> None:
        check_counting(self.counting)
        self.reprobe = reprobe_mode(self.reprobe)
        if self.k_max is not None and not 0 <= self.k_max <= 64:
            raise ValueError("turbospec: k_max must be in 0..64")
        if not 1 <= self.interval <= 10**9:
            raise ValueError("turbospec: interval must be >= 1")
        if not 1 <= self.window <= 10**6:
            raise ValueError("turbospec: window must be in 1..1000000")
        if not 0.0 <= self.initial_alpha <= 1.0:
            raise ValueError("turbospec: initial_alpha must be in [0, 1]")
        self.estimator = WindowMean(window=self.window, initial=self.initial_alpha, counting=self.counting)
        self.per_request_stats = PerRequestStats(window=self.window)
        self.step = 0
        self.verify_len = 0  # v*, the last decision
        self.decisions = 0

    def _k_max(self, batch) -> int:
        return batch.max_k if self.k_max is None else min(self.k_max, batch.max_k)

    def decide(self, batch) -> int:
        """Section 2.3 get_verified_len: early-stop scan, no bias, mixed batch priced."""
        self.decisions += 1
        return scan_uniform_k(batch, self.estimator.alpha, self._k_max(batch), zero_bias=1.0,
                              include_prefill=True, oom_guard=False)

    def proportional_split(self, batch, v: int) -> list[int]:
        """k_r = round(v * B * alpha_r / sum_j alpha_j), clamped to 0..k_max."""
        alphas = [self.per_request_stats.window_mean(r.request_id, self.estimator.alpha) for r in batch.requests]
        total = sum(alphas)
        if total <= 0:
            return [0] * batch.size
        k_max = self._k_max(batch)
        return [max(0, min(k_max, round(v * batch.size * a / total))) for a in alphas]

    def propose(self, batch) -> list[int]:
        t = self.step
        self.step += 1
        if t % self.interval == 0 and (batch.style != "ngram" or any(r.ngram_match for r in batch.requests)):
            self.verify_len = self.decide(batch)
        if self.reprobe == "verify" and (t + 1) % self.interval == 0:
            return [self._k_max(batch)] * batch.size
        if self.per_request:
            return self.proportional_split(batch, self.verify_len)
        return [self.verify_len] * batch.size

    def observe(self, outcome) -> None:
        self.estimator.update(outcome)
        if self.per_request:
            self.per_request_stats.update(outcome, self.counting)

    def estimated_alpha(self) -> float | None:
        return self.estimator.alpha


__all__ = ["TurboSpec", "REPROBE_MODES", "reprobe_mode"]

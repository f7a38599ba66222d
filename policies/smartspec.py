"""SmartSpec V0 (`dsd` branch): one goodput-optimal k for the whole batch, as released by default.

smartspec-reference.md sections 2.1 (draft model), 2.2 (prompt lookup), 1.3 (alpha), 1.4 (OOM guard);
the bookkeeping follows the authors' code it cites ([C-DSD] dsd.py, [C-SDW] spec_decode_worker.py at
`dsd` head b427a1380). docs/policy-variants.md lists the as-released defaults against the options.

* alpha: global, init 0.7, alpha <- 0.85*alpha + 0.15*rho after every step that ran the speculative
  path, rho the LIFETIME cumulative acceptance ratio (policies/estimators.py; `counting=position` is
  V0's per-position count, the default; `counting=prefix` is accepted/drafted). `alpha=` pins it.
* Draft path, every `interval` (20) DSD steps: scan k = 0..k_max with early stop, k=0 goodput x
  `bias` (1.1), OOM sentinel stops the scan (1.1*B*(seq_len+k+1) > KV capacity; `oom_guard=0`
  disables it). Reused in between. Prefill tokens are not priced: V0 never speculates in steps that
  carry prefill.
* Queue threshold, `sticky=released` (default), [C-SDW] `_should_disable_all_speculation` and
  `_run_speculative_decoding_step`, every decode step in this order:
    1. running size >= threshold: disabled_steps += 1;
    2. disabled_steps % sticky_steps == 0 (also when it is still 0): threshold = inf, disabled_steps = 0;
    3. running size >= threshold: k = 0, no DSD evaluation, the DSD step counter does not move;
    4. else the DSD path: k = the cached k unless a decision is due; whenever it returns 0 (a fresh
       0 or the CACHED one) the threshold is (re-)armed at the current running size.
  So a k = 0 decision is kept until the DSD counter reaches the next decision (19 more DSD-path
  steps); a drop of the load below the threshold runs the DSD path, which returns the cached 0 and
  re-arms the threshold at the lower size. disabled_steps is never reset on re-arming.
  `sticky=redecide` (before issue 11): the threshold is set only by a fresh k = 0, it clears as soon
  as the running size drops below it or after `sticky_steps` disabled steps, and a clear re-decides
  at once.
* Prompt lookup, `ngram=released` (default), section 2.2 and [C-DSD] get_ngram_propose_len /
  get_verify_len: the same queue threshold gates the step. Propose 8 unless the recorded history of
  verify lengths is longer than 2*interval and its last 2*interval entries are 0 (then propose 0,
  record a 0 and arm the threshold); the history is cleared when it is longer than 5*interval with
  its last 5*interval entries 0. Otherwise the verify length v is reused (and recorded) between
  decisions; at a decision (DSD counter % interval == 0) with n_match = 0 the step verifies 0, records
  nothing and keeps the cached v; else v = early-stop scan over 0..min(7, k_max), gen =
  l(alpha, v)*n_match + (B - n_match), NO k=0 bias, no OOM guard, and the v = 0 step priced with
  the n-gram proposal already made: plain decode + `lookup_ms` (V0's 0.0012 s constant).
  `ngram=as-draft` (before issue 11): the draft path's scan (bias, OOM guard, v=0 priced as a plain
  decode), no queue threshold, zeros counted per step returned.
* Not modelled: V0 also counts prefill-only steps at or above the threshold (the policy is not
  called there), skips the drafter in disabled steps (stale draft KV), and leaves the overhead term
  out of its n-gram pricing (the cost model's total step time is used).
* style "tree": the same scan over the number of tree nodes (acceptance/tree.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from specdec_sim.policies.estimators import LifetimeEma, check_counting
from specdec_sim.policies.goodput import early_stop_scan, running_size, scan_uniform_k, uniform_goodput

NGRAM_ZERO_STOP = 40  # 2 x 20 recorded zero verify lengths: stop proposing
NGRAM_ZERO_CLEAR = 100  # 5 x 20 consecutive zeros after which the history is cleared
NGRAM_MAX_VERIFY = 7  # V0's n-gram scan: v in range(8)
V0_NGRAM_ZERO_DRAFT_MS = 1.2  # V0's n-gram draft time at v = 0: 0.0012 s [C-DSD] _get_batch_verify_time
STICKY_MODES = ("released", "redecide")
NGRAM_MODES = ("released", "as-draft")


@dataclass
class NgramHistory:
    """V0's `ngram_verify_lens`, kept as its length and its trailing run of zeros (lengths are >= 0)."""

    length: int = 0
    trailing_zeros: int = 0

    def record(self, v: int) -> None:
        self.length += 1
        self.trailing_zeros = self.trailing_zeros + 1 if v == 0 else 0

    def last_all_zero(self, n: int) -> bool:
        """len(history) > n and sum(history[-n:]) == 0."""
        return self.length > n and self.trailing_zeros >= n

    def clear(self) -> None:
        self.length = self.trailing_zeros = 0


@dataclass
class SmartSpec:
    k_max: int | None = None  # None: the engine's batch.max_k
    interval: int = 20
    bias: float = 1.1
    sticky_steps: int = 100
    alpha: float | None = None  # fix alpha (no online update)
    counting: str = "position"
    oom_guard: bool = True  # section 1.4's 1.1x KV headroom check (oom_guard=0 to study its effect)
    sticky: str = "released"
    ngram: str = "released"
    lookup_ms: float = V0_NGRAM_ZERO_DRAFT_MS
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
        if self.sticky not in STICKY_MODES:
            raise ValueError(f"smartspec: sticky must be one of {', '.join(STICKY_MODES)}, not {self.sticky!r}")
        if self.ngram not in NGRAM_MODES:
            raise ValueError(f"smartspec: ngram must be one of {', '.join(NGRAM_MODES)}, not {self.ngram!r}")
        if not (math.isfinite(self.lookup_ms) and self.lookup_ms >= 0):
            raise ValueError("smartspec: lookup_ms must be a number >= 0")
        self.estimator = LifetimeEma(alpha=0.7 if self.alpha is None else self.alpha,
                                     counting=self.counting, fixed=self.alpha is not None)
        self.last_k = 0
        self.dsd_steps = 0  # steps that ran the DSD path (interval counter)
        self.threshold = math.inf  # sticky k = 0: disabled while running size >= threshold
        self.disabled_steps = 0
        self.zero_run = 0  # ngram=as-draft: consecutive zero verify lengths returned
        self.history = NgramHistory()  # ngram=released: V0's recorded verify lengths
        self.decisions = 0
        self._spec_step = False  # as released: the step just proposed ran V0's speculative path, so
        #                          alpha moves toward the lifetime ratio even if nothing was drafted

    # ---- decisions -------------------------------------------------------------------------
    def _k_max(self, batch) -> int:
        return batch.max_k if self.k_max is None else min(self.k_max, batch.max_k)

    def decide(self, batch) -> int:
        """Section 2.1 scan with the current alpha (no caching, no stickiness)."""
        self.decisions += 1
        return scan_uniform_k(batch, self.estimator.alpha, self._k_max(batch), zero_bias=self.bias,
                              include_prefill=False, oom_guard=self.oom_guard)

    def decide_ngram(self, batch) -> int:
        """Section 2.2 get_verify_len as released: v in 0..7, no bias, no OOM guard, lookup paid at v=0."""
        self.decisions += 1
        alpha = self.estimator.alpha

        def goodput_of(v: int) -> float | None:
            gp = uniform_goodput(batch, alpha, v)
            if gp.oom:
                return None
            time_s = gp.time_s + (self.lookup_ms / 1000.0 if v == 0 else 0.0)
            return gp.tokens / time_s
        return early_stop_scan(goodput_of, min(NGRAM_MAX_VERIFY, self._k_max(batch)), zero_bias=1.0)

    # ---- the queue threshold ---------------------------------------------------------------
    def _gate_released(self, size: int) -> bool:
        """[C-SDW] _should_disable_all_speculation: True when this step is disabled."""
        if size >= self.threshold:
            self.disabled_steps += 1
        if self.disabled_steps % self.sticky_steps == 0:
            self.threshold = math.inf
            self.disabled_steps = 0
        return size >= self.threshold

    def _clear_sticky(self) -> None:
        self.threshold = math.inf
        self.disabled_steps = 0
        self.dsd_steps = 0  # re-decide at the next DSD step

    def _gate_redecide(self, size: int) -> bool:
        """The pre-issue-11 threshold: clears when the load drops, and a clear re-decides."""
        if size >= self.threshold:
            self.disabled_steps += 1
            if self.disabled_steps >= self.sticky_steps:
                self._clear_sticky()
            return True
        if self.threshold != math.inf:
            self._clear_sticky()
        return False

    # ---- per style -------------------------------------------------------------------------
    def _draft_k(self, batch) -> int:
        size = running_size(batch)
        released = self.sticky == "released"
        if self._gate_released(size) if released else self._gate_redecide(size):
            return 0
        decided = self.dsd_steps % self.interval == 0
        if decided:
            self.last_k = self.decide(batch)
        self.dsd_steps += 1
        if self.last_k == 0 and (released or decided):
            self.threshold = size
            if not released:
                self.disabled_steps = 0
        self._spec_step = released and self.last_k > 0
        return self.last_k

    def _ngram_k_released(self, batch) -> int:
        size = running_size(batch)
        if self._gate_released(size):
            return 0
        propose = 8
        if self.history.last_all_zero(2 * self.interval):  # get_ngram_propose_len
            propose = 0
            self.history.record(0)
        if self.history.last_all_zero(5 * self.interval):
            self.history.clear()
        if propose == 0:
            self.threshold = size
            return 0
        self._spec_step = True
        decided = self.dsd_steps % self.interval == 0  # get_verify_len
        self.dsd_steps += 1
        if not decided:
            self.history.record(self.last_k)
            return self.last_k
        if not any(r.ngram_match for r in batch.requests):
            return 0
        self.last_k = self.decide_ngram(batch)
        self.history.record(self.last_k)
        return self.last_k

    def _ngram_k_as_draft(self, batch) -> int:
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
        self._spec_step = False
        if batch.style != "ngram":
            k = self._draft_k(batch)
        elif self.ngram == "released":
            k = self._ngram_k_released(batch)
        else:
            k = self._ngram_k_as_draft(batch)
        k = min(k, batch.max_k)
        return [k] * batch.size

    def observe(self, outcome) -> None:
        self.estimator.update(outcome, spec_step=self._spec_step)
        self._spec_step = False

    def estimated_alpha(self) -> float | None:
        return self.estimator.alpha


__all__ = ["SmartSpec", "NgramHistory", "NGRAM_ZERO_STOP", "NGRAM_ZERO_CLEAR", "NGRAM_MAX_VERIFY",
           "V0_NGRAM_ZERO_DRAFT_MS", "STICKY_MODES", "NGRAM_MODES"]

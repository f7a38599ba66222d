"""Forward-pass and drafting coefficients of a calibration (milliseconds), and how one forward is priced.

Forward-pass form (target, and draft when drafting runs the draft model step by step):

    t_ms = fixed + per_kv_token * N_kv + per_batched_token * N_batched + per_seq * B
           + spec_on * [speculating] + after_knee * max(0, N_batched - knee_tokens)
           + prefill_attention * sum_i(chunk_i * (context_i + chunk_i / 2))

With `after_knee = 0` and `prefill_attention = 0` this is the TurboSpec V1 linear model
(smartspec-reference.md section 1.4); the hinge term captures the compute knee where latency
stops being flat in batched tokens, which is what `profile-gpu` fits on real hardware.

`ValidRange` is where a calibration may be used, in the cost model's own features; `lowest_forward`,
`lowest_draft_forward` and `lowest_linear_draft` find the smallest time over such a range exactly:
each form is piecewise linear with one break (the knee), so its minimum over the range lies on a
corner of a linear piece (`forward_corners`), and evaluating those few points is the whole check.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class ForwardCoefficients:
    """Latency of one forward pass in milliseconds (see the module docstring)."""

    fixed_ms: float
    per_kv_token_ms: float = 0.0
    per_batched_token_ms: float = 0.0
    per_seq_ms: float = 0.0
    spec_on_ms: float = 0.0
    knee_tokens: float = 0.0
    after_knee_ms: float = 0.0
    prefill_attention_ms: float = 0.0

    def forward_ms(self, batched_tokens: float, kv_tokens: float, num_seqs: int,
                   speculating: bool = False, prefill_attention_tokens2: float = 0.0) -> float:
        t = (self.fixed_ms + self.per_kv_token_ms * kv_tokens
             + self.per_batched_token_ms * batched_tokens + self.per_seq_ms * num_seqs)
        if speculating:
            t += self.spec_on_ms
        if self.after_knee_ms and batched_tokens > self.knee_tokens:
            t += self.after_knee_ms * (batched_tokens - self.knee_tokens)
        if self.prefill_attention_ms:
            t += self.prefill_attention_ms * prefill_attention_tokens2
        return t


@dataclass(frozen=True)
class DraftCost:
    """How drafting time grows with the proposal length.

    kind = "sequential": k draft forwards (a draft model, or an EAGLE head: one decoder layer plus the
    LM head), pass j over the requests still drafting (`forward` gives one draft forward). With
    first_pass = "step_tokens" the first pass runs over every token the target computes in the step
    (verified tokens and prefill chunks: the drafter catches up on accepted tokens and prefills the
    prompt, as vLLM V1's EAGLE and draft-model proposers do) and a step of prefill chunks alone charges
    that pass too when the run speculates; with "drafting" (the default, TurboSpec-era files) pass 1
    covers one token per drafting request. kind = "linear": TurboSpec's closed form
    fixed + per_kv_token*N_kv + per_scheduled_token*N_sched + per_k*k + per_seq*B.
    kind = "fraction": a fixed share of the target time (prompt lookup / n-gram, 4 %).
    `head_after_knee_ms` prices the LM head's compute on the drafted rows of each sequential pass (`forward`
    leaves it out of its slope, since pass 1 runs over every token but computes logits for one row per request).
    """

    kind: str = "sequential"
    forward: ForwardCoefficients | None = None
    fixed_ms: float = 0.0
    per_kv_token_ms: float = 0.0
    per_scheduled_token_ms: float = 0.0
    per_k_ms: float = 0.0
    per_seq_ms: float = 0.0
    fraction_of_target: float = 0.0
    first_pass: str = "drafting"
    head_after_knee_ms: float = 0.0  # the drafter's LM head per drafted row past `forward.knee_tokens`, every pass
    #                                  (logits are computed for one row per drafting request, not for every token)


@dataclass(frozen=True)
class ValidRange:
    """Where a calibration may be used, in the cost model's features: a forward carries 1..max_batch_size
    sequences and B..max_batched_tokens batched tokens (every sequence computes at least one), reads
    0..max_context_tokens KV tokens in all, and drafting proposes 1..max_k tokens per request."""

    max_batch_size: int = 256  # vLLM's default --max-num-seqs
    max_batched_tokens: int = 8192  # simulate's default --max-num-batched-tokens
    max_context_tokens: int = 0  # KV tokens read by one step; a calibration defaults it to its KV capacity
    max_k: int = 64  # simulate's --max-k limit

    def describe(self) -> str:
        return (f"valid_range: batch 1..{self.max_batch_size}, batched tokens 1..{self.max_batched_tokens}, "
                f"context 0..{self.max_context_tokens}, k 1..{self.max_k}")


@dataclass(frozen=True)
class LowPoint:
    """The smallest time of one priced term over a ValidRange and where it is reached."""

    ms: float
    batch: float
    batched_tokens: float
    context: float
    speculating: bool = False
    k: int = 0

    def where(self) -> str:
        text = (f"batch {self.batch:g}, {self.batched_tokens:g} batched tokens, "
                f"context {self.context:g} KV tokens")
        return text + (f", k {self.k}" if self.k else "") + (", speculating" if self.speculating else "")


def _knots(lo: float, hi: float, knee: float | None) -> list[float]:
    """lo, hi and the knee when it falls strictly between them: the break points of a hinge on [lo, hi]."""
    points = {float(lo), float(hi)}
    if knee is not None and lo < knee < hi:
        points.add(float(knee))
    return sorted(points)


def forward_corners(coef: ForwardCoefficients, rng: ValidRange) -> Iterator[tuple[float, float, float]]:
    """(batch, batched tokens, context) at every corner of every linear piece of `coef` over `rng`:
    the region 1 <= B <= B_max, B <= N <= N_max, 0 <= ctx <= ctx_max, cut at N = knee."""
    n_max = rng.max_batched_tokens
    knee = coef.knee_tokens if coef.after_knee_ms else None
    for batch in _knots(1, min(rng.max_batch_size, n_max), knee):
        for batched in _knots(batch, n_max, knee):
            for context in (0, rng.max_context_tokens):
                yield batch, batched, context


def lowest_forward(coef: ForwardCoefficients, rng: ValidRange) -> LowPoint:
    """Exact minimum of a forward over `rng`, speculating or not (prefill attention at 0: its
    coefficient must be >= 0, which makes 0 its smallest contribution)."""
    return min((LowPoint(coef.forward_ms(n, ctx, b, spec), b, n, ctx, spec)  # type: ignore[arg-type]
                for b, n, ctx in forward_corners(coef, rng) for spec in (False, True)), key=lambda p: p.ms)


def lowest_draft_forward(coef: ForwardCoefficients, rng: ValidRange) -> LowPoint:
    """Exact minimum of one sequential draft forward, priced as the cost model does: B drafting
    requests compute B tokens (N = B) and read 0..max_context KV tokens."""
    knee = coef.knee_tokens if coef.after_knee_ms else None
    return min((LowPoint(coef.forward_ms(b, ctx, b), b, b, ctx)  # type: ignore[arg-type]
                for b in _knots(1, min(rng.max_batch_size, rng.max_batched_tokens), knee)
                for ctx in (0, rng.max_context_tokens)), key=lambda p: p.ms)


def lowest_linear_draft(d: DraftCost, rng: ValidRange) -> LowPoint:
    """Exact minimum of TurboSpec's linear draft time: m proposing requests (1..B_max), scheduled
    tokens m..N_max, k in 1..max_k, context 0..max_context (linear: the corners suffice)."""
    b_max = min(rng.max_batch_size, rng.max_batched_tokens)
    points = []
    for m in _knots(1, b_max, None):
        for sched in _knots(m, rng.max_batched_tokens, None):
            for k in sorted({1, max(1, rng.max_k)}):
                for ctx in (0, rng.max_context_tokens):
                    ms = d.fixed_ms + d.per_kv_token_ms * ctx + d.per_scheduled_token_ms * sched + d.per_k_ms * k \
                        + d.per_seq_ms * m
                    points.append(LowPoint(ms, m, sched, ctx, True, k))
    return min(points, key=lambda p: p.ms)

"""Forward-pass and drafting coefficients of a calibration (milliseconds), and how one forward is priced.

Forward-pass form (target, and draft when drafting runs the draft model step by step):

    t_ms = fixed + per_kv_token * N_kv + per_batched_token * N_batched + per_seq * B
           + spec_on * [speculating] + after_knee * max(0, N_batched - knee_tokens)
           + prefill_attention * sum_i(chunk_i * (context_i + chunk_i / 2))

With `after_knee = 0` and `prefill_attention = 0` this is the TurboSpec V1 linear model
(smartspec-reference.md section 1.4); the hinge term captures the compute knee where latency
stops being flat in batched tokens, which is what `profile-gpu` fits on real hardware.
"""
from __future__ import annotations

from dataclasses import dataclass


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

    kind = "sequential": k draft-model forwards, step j over the requests still drafting
    (`forward` gives one draft forward). kind = "linear": TurboSpec's closed form
    fixed + per_kv_token*N_kv + per_scheduled_token*N_sched + per_k*k + per_seq*B.
    kind = "fraction": a fixed share of the target time (prompt lookup / n-gram, 4 %).
    """

    kind: str = "sequential"
    forward: ForwardCoefficients | None = None
    fixed_ms: float = 0.0
    per_kv_token_ms: float = 0.0
    per_scheduled_token_ms: float = 0.0
    per_k_ms: float = 0.0
    per_seq_ms: float = 0.0
    fraction_of_target: float = 0.0

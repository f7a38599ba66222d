"""A request in flight: the engine's own mutable record, also the read-only view policies receive."""
from __future__ import annotations

import math


class Request:
    """A request in flight; the engine's own record, also the policy's read-only SpecRequest view."""

    __slots__ = ("index", "request_id", "prompt_tokens", "output_tokens", "alpha", "generated", "prefill_done",
                 "context_tokens", "tokens_left", "ngram_match", "first_token_s", "last_token_s", "num_steps",
                 "preemptions", "blocks", "replica", "is_decoding", "log_alpha")

    def __init__(self, index: int, request_id: int, prompt_tokens: int, output_tokens: int, alpha: float):
        self.index = index
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.alpha = alpha
        self.generated = 0
        self.prefill_done = 0  # tokens of the current (re)prefill already computed
        self.context_tokens = 0  # tokens held in the KV cache
        self.tokens_left = output_tokens
        self.ngram_match = True
        self.first_token_s = -1.0
        self.last_token_s = -1.0
        self.num_steps = 0
        self.preemptions = 0
        self.blocks = 0  # KV-cache blocks held: written only by simulator.kvcache.KVCache
        self.replica = -1
        self.is_decoding = False
        self.log_alpha = math.log(alpha) if 0.0 < alpha < 1.0 else (-math.inf if alpha <= 0.0 else -1e-300)

    @property
    def prefill_target(self) -> int:
        """Tokens to (re)compute before decoding: the prompt plus anything generated before a preemption."""
        return self.prompt_tokens + self.generated

    @property
    def outstanding_tokens(self) -> int:
        return self.tokens_left + (0 if self.is_decoding else self.prefill_target - self.prefill_done)

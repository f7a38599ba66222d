"""A request in flight: the engine's own mutable record, also the read-only view policies receive."""
from __future__ import annotations

import math


class Request:
    """A request in flight; the engine's own record, also the policy's read-only SpecRequest view."""

    __slots__ = ("index", "request_id", "prompt_tokens", "output_tokens", "alpha", "generated", "prefill_done",
                 "context_tokens", "tokens_left", "ngram_match", "first_token_s", "last_token_s", "num_steps",
                 "preemptions", "blocks", "replica", "is_decoding", "log_alpha", "budget_left", "hashes", "shared_blocks",
                 "cached_hashes", "spans", "process")

    def __init__(self, index: int, request_id: int, prompt_tokens: int, output_tokens: int, alpha: float,
                 budget: int | None = None):
        """`output_tokens` is the true length (the engine stops there: EOS); `budget` is what the server knows,
        the tokens max_tokens allows (the true length with --oracle-lengths; default: the true length)."""
        self.index = index
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.alpha = alpha
        self.generated = 0
        self.prefill_done = 0  # tokens of the current (re)prefill already computed
        self.context_tokens = 0  # tokens held in the KV cache
        self.tokens_left = output_tokens  # the truth: only the scheduler's emission reads it
        self.budget_left = output_tokens if budget is None else budget  # max_tokens - generated: what a server knows
        self.ngram_match = True
        self.first_token_s = -1.0
        self.last_token_s = -1.0
        self.num_steps = 0
        self.preemptions = 0
        self.blocks = 0  # KV-cache blocks held: written only by simulator.kvcache.KVCache
        self.hashes = None  # the prompt's block hashes (prefix caching), when the trace has them
        self.shared_blocks = 0  # of `blocks`, those owned by the prefix cache (KVCache writes it)
        self.cached_hashes: list[int] = []  # the cached hashes this request maps (KVCache writes it)
        self.replica = -1
        self.is_decoding = False
        self.log_alpha = math.log(alpha) if 0.0 < alpha < 1.0 else (-math.inf if alpha <= 0.0 else -1e-300)
        self.spans = None  # measured acceptance replayed (acceptance/measured.py); never read by policies
        self.process = None  # or the request's acceptance process sampled from a profile

    @property
    def prefill_target(self) -> int:
        """Tokens to (re)compute before decoding: the prompt plus anything generated before a preemption."""
        return self.prompt_tokens + self.generated

    @property
    def outstanding_tokens(self) -> int:
        """Tokens a server expects still to compute for it: prefill left plus its max_tokens budget left."""
        return self.budget_left + (0 if self.is_decoding else self.prefill_target - self.prefill_done)

"""The policy interface: what a speculation policy sees each decode step and what it is told afterwards.

Policies are pure decision code: no SimPy, no I/O. The engine builds a `DecodeBatch` each step
that carries decode requests, hands it to `Policy.propose`, which returns one proposal length k
per request (0 = plain decoding), then reports the result through `Policy.observe`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from specdec_sim.costmodel import CostModel


class SpecRequest(Protocol):
    """Read-only view of one decoding request (the engine passes its own request objects)."""

    request_id: int
    context_tokens: int  # prompt + generated tokens held in the KV cache
    budget_left: int  # output tokens max_tokens still allows (max_tokens - generated): a server never knows
    #                   the true remaining length until EOS (with --oracle-lengths it is the true one)
    alpha: float  # the request's true per-token acceptance probability: only the oracle may read it
    ngram_match: bool  # prompt lookup: whether this step's n-gram lookup found a match


@dataclass(slots=True)
class DecodeBatch:
    """Everything a policy may use to choose proposal lengths for one step."""

    requests: Sequence[SpecRequest]
    cost: CostModel
    kv_tokens: int  # sum of context_tokens over `requests` (precomputed)
    max_k: int  # the engine's lookahead cap (--max-k)
    style: str = "draft"  # "draft" (draft model / EAGLE), "ngram" (prompt lookup) or "tree"
    prefill_tokens: int = 0  # prefill-chunk tokens sharing the step (mixed batches)
    num_prefill: int = 0
    queue_len: int = 0  # requests waiting for admission on this replica
    free_kv_tokens: int = 1 << 62  # KV slots still free after the batch's current contexts

    @property
    def size(self) -> int:
        return len(self.requests)


@dataclass(slots=True)
class StepOutcome:
    """What happened in a decode step: per request, tokens proposed and draft tokens accepted."""

    requests: Sequence[SpecRequest]
    proposed: Sequence[int]
    accepted: Sequence[int]
    step_time_s: float  # how long the step took (what a server measures)


class Policy(Protocol):
    """A speculation policy. Optionally a class attribute `observes = False` says that `observe` ignores its
    outcome, so the engine need not build one each step (absent: True), and `varies_k = False` that its k never
    changes at run time, so the engine keeps FULL CUDA graphs and pays no dynamic-k tax (absent: True: an engine
    that lets a policy change k must run PIECEWISE graphs, vLLM #49548)."""

    name: str

    def propose(self, batch: DecodeBatch) -> list[int]:
        """One proposal length per request in batch.requests, each in 0..batch.max_k."""

    def observe(self, outcome: StepOutcome) -> None:
        """Learn from the step just taken (acceptance estimates, counters)."""

    def estimated_alpha(self) -> float | None:
        """The policy's current global acceptance estimate, for logs (None if it keeps none)."""


@dataclass
class NoSpeculation:
    """`none`: plain decoding, k = 0 for every request."""

    name: str = "none"
    observes = False  # observe() ignores the outcome (see Policy)
    varies_k = False  # a static speculative config (see Policy)

    def propose(self, batch: DecodeBatch) -> list[int]:
        return [0] * len(batch.requests)

    def observe(self, outcome: StepOutcome) -> None:
        pass

    def estimated_alpha(self) -> float | None:
        return None


@dataclass
class FixedK:
    """`fixed:K`: every request proposes K tokens every decode step (vLLM's static speculation)."""

    k: int = 3
    name: str = field(default="fixed", init=False)
    observes = False  # observe() ignores the outcome (see Policy)
    varies_k = False  # a static speculative config (see Policy)

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError("fixed: K must be >= 0")
        self.name = f"fixed:{self.k}"

    def propose(self, batch: DecodeBatch) -> list[int]:
        return [min(self.k, batch.max_k)] * len(batch.requests)

    def observe(self, outcome: StepOutcome) -> None:
        pass

    def estimated_alpha(self) -> float | None:
        return None

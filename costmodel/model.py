"""One engine step: what it computes (`StepShape`, built by `step_shape` from plain numbers) and what it costs.

The engine prices the step it runs, the policies price candidate steps, and the profiler's replay
re-executes logged steps: all three build their `StepShape` with `step_shape` (or `shape_from_levels`),
so a step is described the same way everywhere. Inputs are plain numbers (proposal lengths, token
counts), never engine objects; what differs between callers is only what they know (the engine knows
each prefill chunk's context, a policy choosing k before the chunks are cut knows only their total).

`CostModel.step_time` prices a shape as draft, verify and overhead seconds with one calibration; policies
call `CostModel.step_time_s` in loops to price candidate proposal lengths. Pure: no SimPy, no I/O. A
loaded calibration is checked over its `valid_range`; a step outside it that still prices to a
non-positive forward or a negative draft/overhead time raises `CalibrationError` (one line naming the
calibration and the step) instead of handing the clock a negative delay.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from specdec_sim.costmodel.calibration import Calibration, CalibrationError

@dataclass(slots=True)
class StepShape:
    """What one engine step computes, summed over the requests it carries."""

    num_decode: int = 0  # decoding requests (B)
    num_proposing: int = 0  # decoding requests with k > 0 (m)
    verify_tokens: int = 0  # sum over decoding requests of (k_r + 1)
    prefill_tokens: int = 0  # prompt tokens (or prefill-chunk tokens) in the step
    num_prefill: int = 0  # requests carrying a prefill chunk
    kv_tokens: int = 0  # context tokens already in the KV cache that the step reads
    max_k: int = 0  # sequential draft passes (1 for a tree: one pass of the heads drafts every node)
    draft_batch_sizes: tuple[int, ...] = ()  # requests drafting at sequential draft pass j = 1..max_k
    prefill_attention_tokens2: float = 0.0  # sum_i chunk_i * (context_i + chunk_i / 2)

    @property
    def num_seqs(self) -> int:
        return self.num_decode + self.num_prefill


@dataclass(frozen=True, slots=True)
class PrefillTerms:
    """Sums over the prefill chunks of a step: tokens, chunks, context read, attention work."""

    tokens: int = 0
    chunks: int = 0
    context_tokens: int = 0
    attention_tokens2: float = 0.0


NO_PREFILL = PrefillTerms()


def prefill_terms(chunks: Iterable[tuple[int, int]]) -> PrefillTerms:
    """PrefillTerms of (chunk tokens, context tokens already cached) pairs."""
    tokens = count = context = 0
    attn2 = 0.0
    for chunk, ctx in chunks:
        tokens += chunk
        count += 1
        context += ctx
        attn2 += chunk * (ctx + chunk / 2.0)
    return PrefillTerms(tokens, count, context, attn2)


def shape_from_levels(num_decode: int, level_counts: Sequence[int], kv_tokens: int,
                      prefill: PrefillTerms = NO_PREFILL, tree: bool = False, num_proposing: int | None = None,
                      draft_tokens: int | None = None) -> StepShape:
    """The StepShape of a step whose draft level j (1-based) is drafted by level_counts[j-1] requests.

    kv_tokens counts the decoding requests' contexts; the prefill chunks' contexts are added
    from `prefill`. num_proposing defaults to level_counts[0] (requests with k >= 1) and
    draft_tokens (tokens verified beyond each request's one) to sum(level_counts); callers that
    price a level as already paid for (the greedy policy) or replay a logged step give both."""
    levels = len(level_counts)
    proposing = (level_counts[0] if levels else 0) if num_proposing is None else num_proposing
    if draft_tokens is None:
        draft_tokens = sum(level_counts)
    if tree and levels:  # one pass of the tree heads drafts every node
        levels, level_counts = 1, (proposing,)
    return StepShape(num_decode, proposing, num_decode + draft_tokens, prefill.tokens, prefill.chunks,
                     kv_tokens + prefill.context_tokens, levels, tuple(level_counts), prefill.attention_tokens2)


def level_counts_of(ks: Sequence[int]) -> tuple[int, ...]:
    """[j-1] = number of proposals with k >= j, for j = 1..max(ks)."""
    max_k = max(ks) if ks else 0
    if not max_k:
        return ()
    if min(ks) == max_k:  # uniform proposal: every request drafts at every level
        return (len(ks),) * max_k
    counts = [0] * (max_k + 1)
    for k in ks:
        counts[k] += 1
    levels, running = [], 0
    for j in range(max_k, 0, -1):
        running += counts[j]
        levels.append(running)
    levels.reverse()
    return tuple(levels)


def step_shape(ks: Sequence[int], kv_tokens: int, prefill: PrefillTerms = NO_PREFILL,
               tree: bool = False) -> StepShape:
    """The StepShape of a step: one proposal length per decoding request, their summed context,
    and the prefill chunks sharing the step."""
    n = len(ks)
    top = max(ks) if ks else 0
    if not top:  # no drafts (the engine's most frequent shapes are priced here: kept short)
        return StepShape(n, 0, n, prefill.tokens, prefill.chunks, kv_tokens + prefill.context_tokens, 0, (),
                         prefill.attention_tokens2)
    if not tree and min(ks) == top:  # uniform proposal: every request drafts at every level
        return StepShape(n, n, n + n * top, prefill.tokens, prefill.chunks, kv_tokens + prefill.context_tokens,
                         top, (n,) * top, prefill.attention_tokens2)
    return shape_from_levels(n, level_counts_of(ks), kv_tokens, prefill, tree)


def uniform_shape(num_decode: int, kv_tokens: int, k: int, prefill_tokens: int = 0,
                  num_prefill: int = 0) -> StepShape:
    """Shape of a decode step where every request proposes the same k (what SmartSpec prices)."""
    return step_shape([k] * num_decode, kv_tokens, PrefillTerms(prefill_tokens, num_prefill))


OOM_STEP_TIME_S = 10_000.0  # SmartSpec's out-of-memory sentinel, in seconds
_INF = float("inf")


@dataclass(slots=True, init=False)
class StepTime:
    """One step's draft, verify and overhead seconds, and their sum (computed once: the engine reads it
    several times per step and policies once per candidate)."""

    draft_s: float
    verify_s: float
    overhead_s: float
    total_s: float

    def __init__(self, draft_s: float, verify_s: float, overhead_s: float):
        self.draft_s = draft_s
        self.verify_s = verify_s
        self.overhead_s = overhead_s
        self.total_s = draft_s + verify_s + overhead_s


class CostModel:
    """Prices a StepShape with one calibration. Pure and cheap: policies call it in loops.

    A step is three buckets (milliseconds, returned in seconds):

    * verify: the target forward (`ForwardCoefficients`: weights, KV read, compute past the knee); with
      `scorer` "batch_expansion" (vLLM V0) each request's k+1 positions are separate one-token sequences
      that each read the request's whole context, so the KV read and per-sequence costs scale with
      B x (k+1); a forward of more than `cuda_graph_max_batch` sequences, or with a prefill in V0, runs
      eagerly and pays `eager_forward_ms`; a policy that varies k pays the dynamic-k tax (PIECEWISE
      instead of FULL CUDA graphs) here;
    * draft: the proposer's passes (`draft_ms`), each with the LM head on its drafted rows;
    * overhead: per step, per sequence, per sampled or verified logits row (vocabulary-sized work, B x (k+1)
      rows), and in speculating steps per drafting request (rejection sampling and bookkeeping).
    """

    def __init__(self, calibration: Calibration, drafter: bool = True, dynamic_k: bool = False):
        """`drafter`: the run has a proposer loaded, so a drafter that prefills prompts (first_pass
        "step_tokens") is charged for them in steps of prefill chunks alone; False for runs that never
        speculate (no drafter in the engine, as a vLLM baseline without a speculative config).
        `dynamic_k`: the policy changes k at run time, so the engine runs PIECEWISE CUDA graphs and every
        step pays the calibration's dynamic-k tax (vLLM #49548)."""
        c = self.calibration = calibration
        self._target = c.target
        self._draft = c.draft
        self._turbospec = c.batched_tokens_convention == "turbospec_v1"
        self._step_tokens_pass = c.draft.kind == "sequential" and c.draft.first_pass == "step_tokens"
        self._drafter_prefill = drafter and self._step_tokens_pass
        self._step_overhead = c.step_overhead_ms
        self._per_request, self._row, self._spec_request = c.per_request_ms, c.sampling_row_ms, c.spec_per_request_ms
        self.dynamic_k = dynamic_k
        self._tax, self._tax_spec = (c.dynamic_k_tax_ms, c.dynamic_k_tax_spec_ms) if dynamic_k else (0.0, 0.0)
        self._taxed = bool(self._tax or self._tax_spec)
        self._overhead_fraction, self._overhead_fixed = c.overhead_fraction, c.overhead_fixed_ms
        self._expand = c.scorer == "batch_expansion"
        self._graph_max = c.cuda_graph_max_batch
        self._eager, self._eager_draft = c.eager_forward_ms, c.eager_draft_forward_ms
        self._v0 = c.engine == "v0"
        draft = c.draft
        self._head = draft.head_after_knee_ms if draft.forward is not None else 0.0
        self._head_knee = draft.forward.knee_tokens if draft.forward is not None else 0.0

    def scored_sequences(self, shape: StepShape) -> int:
        """Sequences the target forward carries: B + prefills, or with batch expansion sum(k_r + 1) + prefills."""
        if self._expand and shape.num_proposing:
            return shape.verify_tokens + shape.num_prefill
        return shape.num_seqs

    def _eager_forward(self, sequences: int, shape: StepShape) -> bool:
        """Whether the target forward runs without CUDA graphs: more sequences than captured, or (V0) a prefill."""
        if self._graph_max and sequences > self._graph_max:
            return True
        return self._v0 and shape.num_prefill > 0 and self._eager > 0.0

    def forward_ms(self, shape: StepShape) -> float:
        """The target forward alone (what an n-gram lookup's share and TurboSpec's overhead share are taken of)."""
        batched = shape.verify_tokens + shape.prefill_tokens
        if self._turbospec:  # N_sched_wo_spec = B + prefill tokens counted again (reference 1.4)
            batched += shape.num_decode
        kv, sequences = shape.kv_tokens, shape.num_seqs
        spec = shape.num_proposing > 0
        if self._expand and spec:  # every position reads its request's context (mean context: contexts not kept)
            sequences = self.scored_sequences(shape)
            kv = shape.kv_tokens * shape.verify_tokens / max(1, shape.num_decode)
        t = self._target.forward_ms(batched, kv, sequences, spec, shape.prefill_attention_tokens2)
        if self._eager and self._eager_forward(sequences, shape):
            t += self._eager
        return t

    def target_ms(self, shape: StepShape) -> float:
        """The verify bucket: the target forward, and the dynamic-k tax of a policy that varies k."""
        t = self.forward_ms(shape)
        return t + self.dynamic_k_tax_ms(shape) if self._taxed else t

    def draft_ms(self, shape: StepShape, target_ms: float) -> float:
        if shape.max_k <= 0:
            if self._drafter_prefill and shape.prefill_tokens > 0:  # the drafter prefills the prompt chunks
                return self._draft.forward.forward_ms(shape.prefill_tokens, shape.kv_tokens, shape.num_prefill)
            return 0.0
        d = self._draft
        if d.kind == "fraction":
            return d.fraction_of_target * target_ms
        if d.kind == "linear":
            scheduled = shape.num_decode + shape.prefill_tokens
            return (d.fixed_ms + d.per_kv_token_ms * shape.kv_tokens + d.per_scheduled_token_ms * scheduled
                    + d.per_k_ms * shape.max_k + d.per_seq_ms * shape.num_proposing)
        fwd = d.forward
        kv_per_seq = shape.kv_tokens / max(1, shape.num_seqs)
        total = 0.0
        sizes = shape.draft_batch_sizes
        if self._step_tokens_pass:  # pass 1 runs over every token of the step (accepted tokens, prompt chunks)
            total = fwd.forward_ms(shape.verify_tokens + shape.prefill_tokens, shape.kv_tokens, shape.num_seqs)
            total += self._pass_extra(sizes[0]) if sizes else 0.0
            sizes = sizes[1:]
        last, last_ms = -1, 0.0
        for drafting in sizes:  # passes of equal size (a uniform proposal) are priced once
            if drafting != last:
                last = drafting
                last_ms = fwd.forward_ms(drafting, kv_per_seq * drafting, drafting) + self._pass_extra(drafting)
            total += last_ms
        return total

    def _pass_extra(self, rows: int) -> float:
        """One draft pass's LM head on its `rows` drafted rows past the knee, and its eager launches if uncaptured."""
        extra = self._head * (rows - self._head_knee) if self._head and rows > self._head_knee else 0.0
        if self._eager_draft and self._graph_max and rows > self._graph_max:
            extra += self._eager_draft
        return extra

    def overhead_ms(self, shape: StepShape, target_ms: float) -> float:
        """Per step, per sequence, per logits row; in speculating steps per drafting request (and TurboSpec's share
        of the target time)."""
        sequences = self.scored_sequences(shape) if self._v0 else shape.num_seqs
        overhead = self._step_overhead + self._per_request * sequences
        if self._row:
            overhead += self._row * (shape.verify_tokens + shape.num_prefill)
        if shape.max_k > 0:
            overhead += (self._overhead_fraction * target_ms + self._overhead_fixed
                         + self._spec_request * shape.num_proposing)
        return overhead

    def dynamic_k_tax_ms(self, shape: StepShape) -> float:
        """What this step paid for a policy that varies k (0 for static policies)."""
        if not self._taxed:
            return 0.0
        return self._tax + self._tax_spec if shape.max_k > 0 else self._tax

    def step_time(self, shape: StepShape) -> StepTime:
        """The step's buckets; an n-gram lookup's share and TurboSpec's overhead share are of the forward alone,
        so the dynamic-k tax adds exactly itself (in the verify bucket)."""
        target = self.forward_ms(shape)
        draft = self.draft_ms(shape, target)
        overhead = self.overhead_ms(shape, target)
        if not (0.0 < target < _INF and 0.0 <= draft < _INF and 0.0 <= overhead < _INF):
            self._refuse_unless_empty(shape, target, draft, overhead)
        if self._taxed:
            target += self._tax + self._tax_spec if shape.max_k > 0 else self._tax
        return StepTime(draft / 1000.0, target / 1000.0, overhead / 1000.0)

    def _refuse_unless_empty(self, shape: StepShape, target: float, draft: float, overhead: float) -> None:
        """A step of no sequences may cost 0; any other non-positive or non-finite time is refused."""
        if not (target == 0.0 and shape.num_seqs == 0 and draft == 0.0 and 0.0 <= overhead < _INF):
            raise CalibrationError(self._bad_step(shape, target, draft, overhead))

    def _bad_step(self, shape: StepShape, target: float, draft: float, overhead: float) -> str:
        cal = self.calibration
        batched = shape.verify_tokens + shape.prefill_tokens
        return (f"calibration {cal.name!r}: a step of {shape.num_seqs} sequences, {batched} batched tokens, "
                f"{shape.kv_tokens} KV tokens, k {shape.max_k} prices to target {target:.4g} ms, draft {draft:.4g} ms, "
                f"overhead {overhead:.4g} ms (checked only over its {cal.valid_range.describe()}: keep the engine "
                "options inside it)")

    def step_time_s(self, shape: StepShape) -> float:
        return self.step_time(shape).total_s


__all__ = ["StepShape", "PrefillTerms", "NO_PREFILL", "prefill_terms", "shape_from_levels", "level_counts_of",
           "step_shape", "uniform_shape", "OOM_STEP_TIME_S", "StepTime", "CostModel"]

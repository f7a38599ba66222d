"""Step-time cost model: prices a `StepShape` as draft, verify and overhead seconds with one calibration.

Pure: no SimPy, no I/O. The engine calls `CostModel.step_time` for the step it runs; policies
call `CostModel.step_time_s` in loops to price candidate proposal lengths. A loaded calibration
is checked over its `valid_range`; a step outside it that still prices to a non-positive forward
or a negative draft/overhead time raises `CalibrationError` (one line naming the calibration and
the step) instead of handing the clock a negative delay.
"""
from __future__ import annotations

from dataclasses import dataclass

from specdec_sim.costmodel.calibration import Calibration, CalibrationError
from specdec_sim.costmodel.shape import StepShape

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
    """Prices a StepShape with one calibration. Pure and cheap: policies call it in loops."""

    def __init__(self, calibration: Calibration, drafter: bool = True):
        """`drafter`: the run has a proposer loaded, so a drafter that prefills prompts (first_pass
        "step_tokens") is charged for them in steps of prefill chunks alone; False for runs that never
        speculate (no drafter in the engine, as a vLLM baseline without a speculative config)."""
        self.calibration = calibration
        self._target = calibration.target
        self._draft = calibration.draft
        self._turbospec = calibration.batched_tokens_convention == "turbospec_v1"
        self._step_tokens_pass = calibration.draft.kind == "sequential" and calibration.draft.first_pass == "step_tokens"
        self._drafter_prefill = drafter and self._step_tokens_pass
        self._step_overhead = calibration.step_overhead_ms

    def target_ms(self, shape: StepShape) -> float:
        batched = shape.verify_tokens + shape.prefill_tokens
        if self._turbospec:  # N_sched_wo_spec = B + prefill tokens counted again (reference 1.4)
            batched += shape.num_decode
        return self._target.forward_ms(batched, shape.kv_tokens, shape.num_seqs,
                                       shape.num_proposing > 0, shape.prefill_attention_tokens2)

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
            sizes = sizes[1:]
        last, last_ms = -1, 0.0
        for drafting in sizes:  # passes of equal size (a uniform proposal) are priced once
            if drafting != last:
                last, last_ms = drafting, fwd.forward_ms(drafting, kv_per_seq * drafting, drafting)
            total += last_ms
        return total

    def step_time(self, shape: StepShape) -> StepTime:
        target = self.target_ms(shape)
        draft = self.draft_ms(shape, target)
        overhead = self._step_overhead
        if shape.max_k > 0:
            overhead += self.calibration.overhead_fraction * target + self.calibration.overhead_fixed_ms
        if not (0.0 < target < _INF and 0.0 <= draft < _INF and 0.0 <= overhead < _INF):
            self._refuse_unless_empty(shape, target, draft, overhead)
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

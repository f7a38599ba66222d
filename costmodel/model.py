"""Step-time cost model: prices a `StepShape` as draft, verify and overhead seconds with one calibration.

Pure: no SimPy, no I/O. The engine calls `CostModel.step_time` for the step it runs; policies
call `CostModel.step_time_s` in loops to price candidate proposal lengths.
"""
from __future__ import annotations

from dataclasses import dataclass

from specdec_sim.costmodel.calibration import Calibration
from specdec_sim.costmodel.shape import StepShape

OOM_STEP_TIME_S = 10_000.0  # SmartSpec's out-of-memory sentinel, in seconds


@dataclass(slots=True)
class StepTime:
    draft_s: float
    verify_s: float
    overhead_s: float

    @property
    def total_s(self) -> float:
        return self.draft_s + self.verify_s + self.overhead_s


class CostModel:
    """Prices a StepShape with one calibration. Pure and cheap: policies call it in loops."""

    def __init__(self, calibration: Calibration):
        self.calibration = calibration
        self._target = calibration.target
        self._draft = calibration.draft
        self._turbospec = calibration.batched_tokens_convention == "turbospec_v1"

    def target_ms(self, shape: StepShape) -> float:
        batched = shape.verify_tokens + shape.prefill_tokens
        if self._turbospec:  # N_sched_wo_spec = B + prefill tokens counted again (reference 1.4)
            batched += shape.num_decode
        return self._target.forward_ms(batched, shape.kv_tokens, shape.num_seqs,
                                       shape.num_proposing > 0, shape.prefill_attention_tokens2)

    def draft_ms(self, shape: StepShape, target_ms: float) -> float:
        if shape.max_k <= 0:
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
        for drafting in shape.draft_batch_sizes:
            total += fwd.forward_ms(drafting, kv_per_seq * drafting, drafting)
        return total

    def step_time(self, shape: StepShape) -> StepTime:
        target = self.target_ms(shape)
        draft = self.draft_ms(shape, target)
        overhead = 0.0
        if shape.max_k > 0:
            overhead = self.calibration.overhead_fraction * target + self.calibration.overhead_fixed_ms
        return StepTime(draft / 1000.0, target / 1000.0, overhead / 1000.0)

    def step_time_s(self, shape: StepShape) -> float:
        return self.step_time(shape).total_s

"""What a simulation records: per-request outcomes in numpy arrays, per-step rows, counters.

The replicas hand the recorder plain values (`StepRecord`, and the request at finish or
failure); it never sees a replica or a scheduler. Memory stays bounded on long runs: finished
requests live in numpy columns and ITL in a fixed-size histogram; only the optional step log
grows with the number of steps.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from specdec_sim.costmodel import StepShape, StepTime
from specdec_sim.simulator.metrics import LogHistogram
from specdec_sim.simulator.request import Request
from specdec_sim.simulator.scheduler import StepResult

STATUS_PENDING, STATUS_DONE, STATUS_FAILED = 0, 1, 2
STEP_COLUMNS = ("replica", "step", "start_s", "step_time_s", "draft_s", "verify_s", "overhead_s", "num_decode",
                "num_prefill", "prefill_tokens", "verify_tokens", "kv_tokens", "k_mean", "k_max", "proposed",
                "accepted", "emitted", "est_alpha", "kv_blocks_used", "queue_len")
FLOAT_STEP_COLUMNS = ("start_s", "step_time_s", "draft_s", "verify_s", "overhead_s", "k_mean", "est_alpha")


@dataclass(slots=True)
class StepRecord:
    """One engine step as the recorder sees it: plain values, taken after the step completed."""

    replica: int
    decode_steps: int  # decode steps this replica has taken, this one included
    start_s: float
    end_s: float
    timing: StepTime
    shape: StepShape
    result: StepResult
    est_alpha: float | None  # the policy's acceptance estimate (only when the step log is kept)
    kv_blocks_used: int
    queue_len: int


class Recorder:
    """Collects per-request outcomes in arrays, per-step rows in typed columns, and counters."""

    def __init__(self, n: int, record_steps: bool, on_finish: Callable[[int], None] | None = None):
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.num_steps = np.zeros(n, dtype=np.int64)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.emitted = np.zeros(n, dtype=np.int64)
        self.replica = np.full(n, -1, dtype=np.int64)
        self.alpha = np.full(n, np.nan)
        self.status = np.zeros(n, dtype=np.int8)
        self.reasons: dict[int, str] = {}
        self.itl_hist = LogHistogram()
        self.record_steps = record_steps
        self.step_data = array("d")  # row-major, len(STEP_COLUMNS) values per step
        self.num_steps_total = 0
        self.draft_steps = 0  # request-steps that proposed k > 0 (vLLM num_drafts)
        self.draft_tokens = 0
        self.accepted_tokens = 0
        self.decode_request_steps = 0
        self.sum_k = 0
        self.busy_s = 0.0
        self.total_preemptions = 0
        self.completed = 0
        self.on_finish = on_finish

    def arrived(self, req: Request) -> None:
        self.alpha[req.index] = req.alpha
        self.replica[req.index] = req.replica

    def preempted(self, count: int = 1) -> None:
        self.total_preemptions += count

    def finish(self, req: Request, now: float) -> None:
        i = req.index
        self.first_token_s[i] = req.first_token_s
        self.finish_s[i] = now
        self.num_steps[i] = req.num_steps
        self.preemptions[i] = req.preemptions
        self.emitted[i] = req.generated
        self.status[i] = STATUS_DONE
        self.completed += 1
        if self.on_finish is not None and self.completed % 500 == 0:
            self.on_finish(self.completed)

    def fail(self, req: Request, now: float, reason: str) -> None:
        i = req.index
        self.status[i] = STATUS_FAILED
        self.reasons[i] = reason
        self.emitted[i] = req.generated
        self.preemptions[i] = req.preemptions

    def step(self, rec: StepRecord) -> None:
        result, shape, timing = rec.result, rec.shape, rec.timing
        add_itl = self.itl_hist.add
        for gap, count in result.itl_gaps:
            add_itl(gap, count)
        for req in result.finished:
            self.finish(req, rec.end_s)
        self.num_steps_total += 1
        self.busy_s += timing.total_s
        decode = shape.num_decode
        proposed = shape.verify_tokens - decode
        acc = result.accepted
        self.draft_steps += shape.num_proposing
        self.draft_tokens += proposed
        self.accepted_tokens += acc
        self.decode_request_steps += decode
        self.sum_k += proposed
        if not self.record_steps:
            return
        est = rec.est_alpha
        self.step_data.extend((
            rec.replica, rec.decode_steps, rec.start_s, timing.total_s, timing.draft_s, timing.verify_s,
            timing.overhead_s, decode, shape.num_prefill, shape.prefill_tokens, shape.verify_tokens,
            shape.kv_tokens, proposed / decode if decode else 0.0, shape.max_k if decode else 0, proposed, acc,
            result.emitted, np.nan if est is None else est, rec.kv_blocks_used, rec.queue_len))

    def step_frame(self) -> pd.DataFrame:
        table = np.frombuffer(self.step_data, dtype=np.float64).reshape(-1, len(STEP_COLUMNS))
        frame = pd.DataFrame(table, columns=list(STEP_COLUMNS))
        for col in STEP_COLUMNS:
            if col not in FLOAT_STEP_COLUMNS:
                frame[col] = frame[col].astype(np.int64)
        return frame


__all__ = ["Recorder", "StepRecord", "STEP_COLUMNS", "STATUS_PENDING", "STATUS_DONE", "STATUS_FAILED"]

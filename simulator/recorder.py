"""What a simulation records: per-request outcomes in numpy arrays, per-step rows, counters.

The replicas hand the recorder plain values (`StepRecord`, and the request at arrival, finish or
failure); it never sees a replica or a scheduler. Memory stays bounded on long runs: finished
requests live in numpy columns and ITL in a fixed-size histogram; only the optional step log
grows with the number of steps.

ITL counts only requests that finish (as `vllm bench serve` counts successful requests only):
each step's gaps go into the pooled histogram as they happen (so the arithmetic, and every
number of a run where all requests finish, is what it always was), and `Emissions` keeps the
emission times of each request in flight, so a request that fails has its gaps taken back out.
"""
from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field
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


@dataclass(slots=True)
class Emissions:
    """Emission times of one replica's requests in flight, to take a failed request's ITL gaps back out.

    A request enters `started` once it has emitted its first token. A step in which every started
    request emitted (the usual decode step) costs one entry in the shared `timeline`; in any other
    step each started request whose last token time is the step's end gets the time in its own
    list. New starters are found in arrival order (admission is FCFS); a step whose gap count
    disagrees with the scheduler's triggers a full search, so no gap is silently missed.
    """

    unstarted: deque = field(default_factory=deque)  # arrived, no token seen yet, in arrival order
    started: dict = field(default_factory=dict)  # request index -> (request, timeline position, own times)
    timeline: array = field(default_factory=lambda: array("d"))  # ends of steps every started request emitted in
    base: int = 0  # timeline position of timeline[0] (older entries no request needs are dropped)
    limit: int = 8192  # timeline length at which to try dropping old entries

    def emitted(self, end_s: float, expected: int) -> int:
        """Record who emitted at `end_s`; returns how many gaps that accounts for."""
        started = self.started
        if expected == len(started):
            self.timeline.append(end_s)
            if len(self.timeline) >= self.limit:
                self._trim()
            return expected
        n = 0
        for req, _, own in started.values():
            if req.last_token_s == end_s:
                own.append(end_s)
                n += 1
        return n

    def _trim(self) -> None:
        keep = min((pos for _, pos, _ in self.started.values()), default=self.base + len(self.timeline))
        drop = keep - self.base
        if drop > len(self.timeline) // 2:
            del self.timeline[:drop]
            self.base = keep
        self.limit = max(8192, 2 * len(self.timeline))  # a long request pins old entries: try again later

    def _start(self, req: Request, times: list[float]) -> None:
        self.started[req.index] = (req, self.base + len(self.timeline), array("d", times))

    def collect_starters(self, pending, full: bool = False) -> None:
        """Move requests that have emitted their first token into `started` (`pending(i)`: still in flight)."""
        queue, kept = self.unstarted, []
        while queue:
            req = queue.popleft()
            if not pending(req.index):
                continue
            if req.first_token_s >= 0:
                self._start(req, [req.first_token_s])
            elif full or req.blocks > 0 or req.preemptions > 0:  # admitted once: later arrivals may start first
                kept.append(req)
            else:  # never admitted: nor is anything behind it (FCFS)
                queue.appendleft(req)
                break
        queue.extendleft(reversed(kept))

    def found_late(self, end_s: float, pending) -> int:
        """Gaps at `end_s` of requests that started unseen (their first gap is this one)."""
        before = set(self.started)
        self.collect_starters(pending, full=True)
        n = 0
        for i in set(self.started) - before:
            req, _, own = self.started[i]
            if req.last_token_s == end_s and own[0] != end_s:
                own.append(end_s)
                n += 1
        return n

    def forget(self, index: int) -> None:
        """Request `index` finished: its gaps stay pooled."""
        self.started.pop(index, None)

    def gaps(self, index: int) -> list[float]:
        """Forget request `index`; the ITL gaps it emitted (seconds, as the scheduler computed them)."""
        entry = self.started.pop(index, None)
        if entry is None:
            return []
        _, pos, own = entry
        times = sorted([*own, *self.timeline[pos - self.base:]])
        return [times[j] - times[j - 1] for j in range(1, len(times))]


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
        self.busy_s = 0.0
        self.total_preemptions = 0
        self.completed = 0
        self.on_finish = on_finish
        self.on_done: Callable[[], None] | None = None  # called when any request finishes or fails (closed loop)
        self.progress_every = max(1, min(500, n // 200))  # callbacks often enough for a bar on small runs
        self.emissions: dict[int, Emissions] = {}  # per replica

    @property
    def sum_k(self) -> int:
        """Proposal lengths summed over request-steps (every proposed token is a draft token)."""
        return self.draft_tokens

    def arrived(self, req: Request) -> None:
        self.alpha[req.index] = req.alpha
        self.replica[req.index] = req.replica
        self._emissions(req.replica).unstarted.append(req)

    def _emissions(self, replica: int) -> Emissions:
        found = self.emissions.get(replica)
        if found is None:
            found = self.emissions[replica] = Emissions()
        return found

    def _pending(self, index: int) -> bool:
        return self.status[index] == STATUS_PENDING

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
        self._emissions(req.replica).forget(i)
        self.completed += 1
        if self.on_finish is not None and self.completed % self.progress_every == 0:
            self.on_finish(self.completed)
        if self.on_done is not None:
            self.on_done()

    def fail(self, req: Request, now: float, reason: str) -> None:
        i = req.index
        self.status[i] = STATUS_FAILED
        self.reasons[i] = reason
        self.emitted[i] = req.generated
        self.preemptions[i] = req.preemptions
        gaps = self._emissions(req.replica).gaps(i)
        if gaps:
            self.itl_hist.remove(gaps)
        if self.on_done is not None:
            self.on_done()

    def _track_emissions(self, rec: StepRecord, expected: int) -> None:
        """Note which requests emitted in this step (see `Emissions`); every gap is accounted for."""
        emissions = self._emissions(rec.replica)
        found = emissions.emitted(rec.end_s, expected) if expected else 0
        if found != expected:
            found += emissions.found_late(rec.end_s, self._pending)
            if found != expected:
                raise RuntimeError(f"recorder: step at {rec.end_s} s has {expected} ITL gaps, found {found}")
        if rec.shape.num_prefill:
            emissions.collect_starters(self._pending)

    def step(self, rec: StepRecord) -> None:
        result, shape, timing = rec.result, rec.shape, rec.timing
        add_itl = self.itl_hist.add
        gaps = 0
        for gap, count in result.itl_gaps:
            add_itl(gap, count)
            gaps += count
        emissions = self.emissions.get(rec.replica)
        if emissions is not None and gaps and gaps == len(emissions.started) and not shape.num_prefill \
                and len(emissions.timeline) < emissions.limit:
            emissions.timeline.append(rec.end_s)  # the usual step: every started request emitted
        else:
            self._track_emissions(rec, gaps)
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


__all__ = ["Recorder", "StepRecord", "Emissions", "STEP_COLUMNS", "STATUS_PENDING", "STATUS_DONE", "STATUS_FAILED"]

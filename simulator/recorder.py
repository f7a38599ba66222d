"""What a simulation records: per-request outcomes in numpy arrays, per-step rows, counters.

The replicas hand the recorder plain values (`StepRecord`, and the request at arrival, finish or
failure); it never sees a replica or a scheduler. Memory stays bounded on long runs: finished
requests live in numpy columns and ITL in a fixed-size histogram; only the optional step log
grows with the number of steps. ITL is pooled into a log-spaced histogram (`LogHistogram`: relative
bin width 0.12 %, exact count, mean and spread).

ITL counts only requests that finish (as `vllm bench serve` counts successful requests only):
each step's gaps go into the pooled histogram as they happen (so the arithmetic, and every
number of a run where all requests finish, is what it always was), and `Emissions` keeps the
emission times of each request in flight from the step the scheduler reports as its first token,
so a request that fails has its gaps taken back out.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Callable

import math

import numpy as np
import pandas as pd

from specdec_sim.costmodel import StepShape, StepTime
from specdec_sim.simulator.request import Request
from specdec_sim.simulator.scheduler import StepResult

STATUS_PENDING, STATUS_DONE, STATUS_FAILED = 0, 1, 2
STEP_COLUMNS = ("replica", "step", "start_s", "step_time_s", "draft_s", "verify_s", "overhead_s", "num_decode",
                "num_prefill", "prefill_tokens", "verify_tokens", "kv_tokens", "k_mean", "k_max", "proposed",
                "accepted", "emitted", "est_alpha", "kv_blocks_used", "queue_len")
FLOAT_STEP_COLUMNS = ("start_s", "step_time_s", "draft_s", "verify_s", "overhead_s", "k_mean", "est_alpha")


_BINS_PER_DECADE = 2000
_MIN_S = 1e-7
_NUM_BINS = 11 * _BINS_PER_DECADE  # 1e-7 s .. 1e4 s
_log10 = math.log10


class LogHistogram:
    """Pooled positive durations (seconds) in log-spaced bins: exact count, sum and sum of squares."""

    def __init__(self) -> None:
        self.counts = np.zeros(_NUM_BINS, dtype=np.int64)
        self._pending: dict[int, int] = {}
        self.total = 0.0
        self.total_sq = 0.0
        self.n = 0
        self._last_value = -1.0
        self._last_bin = 0

    def add(self, value: float, count: int = 1) -> None:
        self.n += count
        self.total += value * count
        self.total_sq += value * value * count
        if value == self._last_value:
            b = self._last_bin
        else:
            b = int(_log10(value / _MIN_S) * _BINS_PER_DECADE) if value > _MIN_S else 0
            if b >= _NUM_BINS:
                b = _NUM_BINS - 1
            self._last_value, self._last_bin = value, b
        pending = self._pending
        pending[b] = pending.get(b, 0) + count

    def bin_of(self, value: float) -> int:
        """The bin `value` falls in (the same bin `add` puts it in)."""
        b = int(math.log10(value / _MIN_S) * _BINS_PER_DECADE) if value > _MIN_S else 0
        return min(b, _NUM_BINS - 1)

    def remove(self, values: list[float]) -> None:
        """Take back durations added earlier (a request that never finished); counts stay exact."""
        pending = self._pending
        for value in values:
            b = self.bin_of(value)
            pending[b] = pending.get(b, 0) - 1
            self.n -= 1
            self.total -= value
            self.total_sq -= value * value
        if self.n == 0:
            self.total = self.total_sq = 0.0

    def _flush(self) -> None:
        for b, c in self._pending.items():
            self.counts[b] += c
        self._pending.clear()

    def percentile(self, p: float) -> float:
        self._flush()
        if self.n == 0:
            return math.nan
        cum = np.cumsum(self.counts)
        rank = p / 100.0 * (self.n - 1)
        b = int(np.searchsorted(cum, rank + 1, side="left"))
        return _MIN_S * 10 ** ((b + 0.5) / _BINS_PER_DECADE)

    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    def std(self) -> float:
        if not self.n:
            return math.nan
        m = self.mean()
        return math.sqrt(max(0.0, self.total_sq / self.n - m * m))


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

    A request enters `started` in the step that emitted its first token (the scheduler reports it:
    `StepResult.started`). A step in which every started request emitted (the usual decode step) costs
    one entry in the shared `timeline`; in any other step each started request whose last token time is
    the step's end gets the time in its own list. A step whose gap count disagrees with what is found
    is an error, so no gap is silently missed.
    """

    started: dict = field(default_factory=dict)  # request index -> (request, timeline position, own times)
    timeline: array = field(default_factory=lambda: array("d"))  # ends of steps every started request emitted in
    base: int = 0  # timeline position of timeline[0] (older entries no request needs are dropped)
    limit: int = 8192  # timeline length at which to try dropping old entries

    def emitted(self, end_s: float, expected: int) -> int:
        """Record who emitted a gap at `end_s`; returns how many gaps that accounts for."""
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

    def start(self, req: Request) -> None:
        """`req` emitted its first token (no gap): from now on its emissions are tracked."""
        self.started[req.index] = (req, self.base + len(self.timeline), array("d", [req.first_token_s]))

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
        self.speculating_steps = 0  # steps in which some request proposed k > 0
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

    def _emissions(self, replica: int) -> Emissions:
        found = self.emissions.get(replica)
        if found is None:
            found = self.emissions[replica] = Emissions()
        return found

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

    def step(self, rec: StepRecord) -> None:
        result, shape, timing = rec.result, rec.shape, rec.timing
        add_itl = self.itl_hist.add
        gaps = 0
        for gap, count in result.itl_gaps:
            add_itl(gap, count)
            gaps += count
        emissions = self.emissions.get(rec.replica)
        if emissions is not None and gaps and gaps == len(emissions.started) and len(emissions.timeline) < emissions.limit:
            emissions.timeline.append(rec.end_s)  # the usual step: every started request emitted
        elif gaps:
            emissions = emissions or self._emissions(rec.replica)
            found = emissions.emitted(rec.end_s, gaps)
            if found != gaps:
                raise RuntimeError(f"recorder: step at {rec.end_s} s has {gaps} ITL gaps, found {found}")
        if result.started:
            emissions = emissions or self._emissions(rec.replica)
            for req in result.started:
                emissions.start(req)
        for req in result.finished:
            self.finish(req, rec.end_s)
        self.num_steps_total += 1
        self.busy_s += timing.total_s
        decode = shape.num_decode
        proposed = shape.verify_tokens - decode
        acc = result.accepted
        self.draft_steps += shape.num_proposing
        if shape.max_k:
            self.speculating_steps += 1
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


__all__ = ["Recorder", "StepRecord", "Emissions", "LogHistogram", "STEP_COLUMNS", "STATUS_PENDING", "STATUS_DONE", "STATUS_FAILED"]

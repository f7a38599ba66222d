"""The client side of a run: requests sent at their trace times, or in a closed loop of at most N in flight.

`send_requests` is the SimPy process that creates each `Request` when it is sent and hands it to
the router. Open loop (default): request i is sent at its trace arrival time. Closed loop
(`--max-concurrency N`, as `vllm bench serve --max-concurrency`): a request is sent no earlier
than its arrival time and only while fewer than N are in flight; the next one goes out when one
finishes or fails. With a ramp-up of S seconds the N slots open one by one, slot j at j*S/N. A
request's recorded arrival is when it was sent, so TTFT counts from the send, as the client
measures it. Requests the server must reject (prompt plus max_tokens beyond max_model_len) fail
at once with vLLM's reason and free their slot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import simpy


@dataclass(frozen=True)
class Admission:
    """Per request: the max_tokens budget the server knows, and why the server rejects it ("" if it does not)."""

    budget: np.ndarray  # int64: tokens the server may generate (the true length with oracle lengths)
    rejection: list[str]


def admission(prompt_tokens: np.ndarray, output_tokens: np.ndarray, max_model_len: int | None,
              max_tokens: int | np.ndarray | None, oracle_lengths: bool) -> Admission:
    """What the server knows of each request and which it rejects, as vLLM's input checks do.

    max_tokens (one for all, or one per request from the trace) defaults to max_model_len - prompt (vLLM's
    default); with neither the server knows no limit. A prompt of max_model_len tokens or more, or
    prompt + max_tokens above it, is rejected."""
    n = len(prompt_tokens)
    reasons = [""] * n
    unlimited = np.iinfo(np.int64).max // 4
    if max_tokens is not None:
        budget = np.broadcast_to(np.asarray(max_tokens, dtype=np.int64), (n,)).copy()
    elif max_model_len:
        budget = np.maximum(max_model_len - prompt_tokens.astype(np.int64), 0)
    else:
        budget = np.full(n, unlimited, dtype=np.int64)
    if max_model_len:
        too_long = np.flatnonzero((prompt_tokens >= max_model_len) | (prompt_tokens + budget > max_model_len))
        for i in too_long:
            reasons[i] = (f"prompt of {int(prompt_tokens[i])} tokens + max_tokens {int(budget[i])} exceeds "
                          f"max_model_len {max_model_len}")
    if oracle_lengths:
        budget = np.minimum(budget, output_tokens.astype(np.int64))
    return Admission(budget, reasons)


class ConcurrencyGate:
    """At most `limit` requests in flight (slots opening over `ramp_up_s`), on the SimPy clock."""

    def __init__(self, env: simpy.Environment, limit: int, ramp_up_s: float = 0.0):
        self.env = env
        self.limit = limit
        self.ramp_up_s = ramp_up_s
        self.in_flight = 0
        self._freed = env.event()

    def open_slots(self) -> int:
        if self.ramp_up_s <= 0:
            return self.limit
        return min(self.limit, 1 + int(self.env.now * self.limit / self.ramp_up_s))

    def acquire(self):
        """Process fragment: wait until a slot is free, then take it."""
        while self.in_flight >= self.open_slots():
            if self.open_slots() < self.limit:  # the next slot opens at a known time, or a request ends sooner
                opens_at = self.open_slots() * self.ramp_up_s / self.limit
                yield self._freed | self.env.timeout(max(0.0, opens_at - self.env.now))
            else:
                yield self._freed
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        if not self._freed.triggered:
            freed, self._freed = self._freed, self.env.event()
            freed.succeed()


def send_requests(env: simpy.Environment, trace, make_request: Callable[[int], object], route, recorder,
                  admitted: Admission, sent_s: np.ndarray, gate: ConcurrencyGate | None):
    """SimPy process: send each request of `trace` (see the module docstring); `sent_s[i]` gets its send time."""
    arrival = trace.arrival_s
    for i in range(len(arrival)):
        t = float(arrival[i])
        if t > env.now:
            yield env.timeout(t - env.now)
        if gate is not None:
            yield from gate.acquire()
        sent_s[i] = env.now
        req = make_request(i)
        if admitted.rejection[i]:
            recorder.fail(req, env.now, admitted.rejection[i])  # frees its slot through recorder.on_done
            continue
        route(req).enqueue(req)
        recorder.arrived(req)

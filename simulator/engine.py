"""Cluster simulation: arrivals from a trace, a router, N replica processes on one SimPy clock, and records.

`run_prepared(run, policy)` simulates a run prepared once (simulator/prepared.py: requests, calibration,
policy pricing, limits), as `simulate` and `sweep` do; `run_simulation(trace, config, policy, seed)` is the
same for a trace and config given directly (the Python API, benchmarks and tests). Both return a
`SimResult` with a summary dict keyed as `vllm bench serve` keys its JSON (simulator/summary.py), a
per-request DataFrame and (optionally) a per-step DataFrame.

The client side of a run (`send_requests`, a SimPy process): requests are sent at their trace arrival
times (open loop), or in a closed loop of at most `--max-concurrency` N in flight (as `vllm bench serve
--max-concurrency`): a request is sent no earlier than its arrival time and only while fewer than N
are in flight; the next one goes out when one finishes or fails. With a ramp-up of S seconds the N
slots open one by one, slot j at j*S/N. A request's recorded arrival is when it was sent, so TTFT
counts from the send, as the client measures it. Requests the server must reject (prompt plus
max_tokens beyond max_model_len) fail at once with vLLM's reason and free their slot (`admission`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd
import simpy

from specdec_sim.acceptance.draws import AcceptanceDrawer, AlphaSampler
from specdec_sim.acceptance.measured import MeasuredAcceptance, build_measured
from specdec_sim.acceptance.spec_metrics import merge
from specdec_sim.costmodel import Calibration, CostModel
from specdec_sim.policies import make_policy
from specdec_sim.policies.registry import as_policy
from specdec_sim.policies.base import FixedK, NoSpeculation, Policy
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine_mode import EngineLimits
from specdec_sim.simulator.kvcache import KVCache, PrefixCache
from specdec_sim.simulator.prepared import PreparedEngine, PreparedRun, prepare_engine
from specdec_sim.simulator.recorder import Recorder
from specdec_sim.simulator.replica import Replica
from specdec_sim.simulator.request import Request
from specdec_sim.simulator.scheduler import Scheduler
from specdec_sim.simulator.step_noise import StepTimeNoise
from specdec_sim.simulator.summary import EngineOutcome, mark_unfinished, request_frame, run_summary


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


@dataclass
class SimResult:
    summary: dict
    requests: pd.DataFrame
    steps: pd.DataFrame | None
    config: SimConfig
    policy_name: str
    calibration: Calibration | None = None  # the truth the run's clock advanced with


def _routers(config: SimConfig, replicas: list[Replica], rng: random.Random) -> Callable[[Request], Replica]:
    if len(replicas) == 1:
        only = replicas[0]
        return lambda req: only
    if config.router == "random":
        return lambda req: replicas[rng.randrange(len(replicas))]
    if config.router == "least-tokens":
        return lambda req: min(replicas, key=lambda r: (r.outstanding_tokens(), r.index))
    counter = iter(range(1 << 62))
    return lambda req: replicas[next(counter) % len(replicas)]


def _request_factory(trace, sampler: AlphaSampler, measured: MeasuredAcceptance | None,
                     budget, hashes) -> Callable[[int], Request]:
    """make(i): the Request of trace row i when it is sent (its acceptance drawn then, in trace order)."""
    ids, prompts, outputs = trace.request_id, trace.prompt_tokens, trace.output_tokens

    def make(i: int) -> Request:
        if measured is None:
            req = Request(i, int(ids[i]), int(prompts[i]), int(outputs[i]), sampler.next_alpha(), int(budget[i]))
        else:
            alpha, spans, process = measured.assign(i, int(outputs[i]))  # acceptance from data: spans or a profile
            req = Request(i, int(ids[i]), int(prompts[i]), int(outputs[i]), alpha, int(budget[i]))
            req.spans, req.process = spans, process
        if hashes is not None:
            req.hashes = hashes[i]
        return req
    return make


def caching_block_tokens(trace, limits: EngineLimits) -> int:
    """Tokens per hashed block when prefix caching applies (on, and the trace carries block hashes), else 0."""
    return int(trace.hash_block_tokens) if limits.prefix_caching and trace.block_hashes is not None else 0


def _served_trace(trace, limits: EngineLimits, config: SimConfig):
    """The trace as the server runs it (outputs stop at max_tokens: the trace's column, else --max-tokens, else
    max_model_len - prompt) and what the server admits and knows."""
    limit = trace.max_tokens if trace.max_tokens is not None else config.max_tokens
    server = admission(trace.prompt_tokens, trace.output_tokens, limits.max_model_len, limit, config.oracle_lengths)
    outputs = np.minimum(trace.output_tokens, np.maximum(server.budget, 1))  # the oracle's budget is never below
    if not np.array_equal(outputs, trace.output_tokens):
        outputs.setflags(write=False)
        trace = replace(trace, output_tokens=outputs)
    return trace, server


def _replica(env: simpy.Environment, index: int, cost: CostModel, policy_cost: CostModel, policy: Policy,
             config: SimConfig, limits: EngineLimits, num_blocks: int, recorder: Recorder, rng: random.Random,
             position_rates: tuple[float, ...], seed: int, measured: bool = False, hash_tokens: int = 0) -> Replica:
    """One replica: its KV cache, scheduler and acceptance stream, driven by a SimPy process."""
    prefix = PrefixCache(hash_tokens, config.block_size) if hash_tokens else None
    scheduler = Scheduler(KVCache(num_blocks, config.block_size, prefix), limits.max_num_seqs,
                          limits.max_num_batched_tokens,
                          limits.chunked_prefill, limits.spec_in_prefill_steps, config.max_k,
                          watermark_blocks=int(limits.watermark * num_blocks))
    acceptance = AcceptanceDrawer(config.acceptance_mode, config.style, rng, position_rates,
                                  config.ngram_match_prob, measured)
    noise = StepTimeNoise(config.step_time_noise, seed * 1_000_003 + index) if config.step_time_noise > 0 else None
    return Replica(env, index, cost, policy, scheduler, acceptance, recorder, config.style, policy_cost, noise)


def pays_piecewise_tax(cuda_graphs: str, policy: Policy, engine: str = "v1") -> bool:
    """Whether every step pays the calibration's dynamic-k tax: PIECEWISE CUDA graphs, forced (`--cuda-graphs
    piecewise`) or, in V1, because the policy varies k (auto: V0 captured decode graphs per batch size whatever
    k was); a run that never speculates pays it only when forced."""
    if cuda_graphs == "piecewise":
        return True
    return cuda_graphs == "auto" and engine == "v1" and varies_k(policy)


def varies_k(policy: Policy) -> bool:
    """Whether the policy may change k at run time (`varies_k`, default True): its engine runs PIECEWISE CUDA graphs
    and pays the calibration's dynamic-k tax; a policy that never speculates pays nothing."""
    declared = getattr(policy, "varies_k", True)
    return (declared if isinstance(declared, bool) else True) and not never_speculates(policy)


def never_speculates(policy: Policy) -> bool:
    """No speculation at all (the engine then loads no proposer): `none` and `fixed:0`."""
    return isinstance(policy, NoSpeculation) or (isinstance(policy, FixedK) and policy.k == 0)


def run_simulation(trace, config: SimConfig, policy: str | Policy = "none", seed: int = 0,
                   progress: bool | Callable[[int], None] = False, calibration: Calibration | None = None,
                   engine: PreparedEngine | None = None) -> SimResult:
    """Replay `trace` through `config.replicas` replicas under `policy`; deterministic for a given seed.
    `engine`: the run's engine prepared once (`prepared.prepare_engine`, shared by every policy of a run);
    by default it is prepared here from `config` (and `calibration`, an in-memory calibration to use)."""
    engine = engine if engine is not None else prepare_engine(config, calibration)
    config = engine.config
    if not isinstance(policy, str) and config.replicas > 1:
        raise ValueError("pass a policy spec string when simulating several replicas (each needs its own state)")
    policies = [make_policy(policy) if isinstance(policy, str) else as_policy(policy) for _ in range(config.replicas)]
    dynamic = pays_piecewise_tax(config.cuda_graphs, policies[0], engine.limits.engine)
    cost = engine.cost_model(drafter=not never_speculates(policies[0]), dynamic_k=dynamic)
    policy_cost = engine.policy_cost_model(dynamic_k=dynamic)
    limits, num_blocks = engine.limits, engine.num_blocks
    trace, server = _served_trace(trace, limits, config)
    hash_tokens = caching_block_tokens(trace, limits)
    on_finish = progress if callable(progress) else None
    recorder = Recorder(len(trace), config.record_steps, on_finish)
    env = simpy.Environment()
    rng = random.Random(seed)
    measured = build_measured(config, trace, seed)
    replicas = [_replica(env, i, cost, policy_cost, policies[i], config, limits, num_blocks, recorder,
                         random.Random(seed * 1_000_003 + i), engine.position_rates, seed, measured is not None,
                         hash_tokens)
                for i in range(config.replicas)]
    route = _routers(config, replicas, rng)
    sampler = AlphaSampler(engine.mean_alpha, config.acceptance_spread, seed)
    gate = ConcurrencyGate(env, config.max_concurrency, config.concurrency_ramp_up_s) if config.max_concurrency else None
    if gate is not None:
        recorder.on_done = gate.release
    sent_s = np.array(trace.arrival_s, dtype=float)
    make_request = _request_factory(trace, sampler, measured, server.budget, trace.block_hashes if hash_tokens else None)
    env.process(send_requests(env, trace, make_request, route, recorder, server, sent_s, gate))
    env.run(until=config.max_sim_time_s)
    if gate is not None:  # a request's arrival is when the client sent it
        sent_s.setflags(write=False)
        trace = replace(trace, arrival_s=sent_s)
    in_flight = [req for rep in replicas for req in list(rep.scheduler.running) + list(rep.scheduler.waiting)]
    mark_unfinished(recorder, in_flight, stopped=config.max_sim_time_s is not None)
    outcome = EngineOutcome(policies[0].name, max(rep.scheduler.kv.peak_used for rep in replicas) / num_blocks,
                            [rep.scheduler for rep in replicas], merge(rep.acceptance.positions for rep in replicas),
                            dynamic)
    summary = run_summary(trace, recorder, engine, outcome)
    requests = request_frame(trace, recorder)
    steps = recorder.step_frame() if config.record_steps else None
    return SimResult(summary, requests, steps, config, policies[0].name, engine.calibration)


def run_prepared(run: PreparedRun, policy: str | Policy = "none",
                 progress: bool | Callable[[int], None] = False) -> SimResult:
    """Simulate a prepared run (its requests, seed and engine) under `policy`."""
    return run_simulation(run.trace, run.config, policy, run.seed, progress, engine=run.engine)

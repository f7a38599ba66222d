"""Cluster simulation: arrivals from a trace, a router, N replica processes on one SimPy clock, and records.

`run_simulation(trace, config, policy, seed)` is the single entry point used by the CLI, the
sweep runner, benchmarks and tests. It returns a `SimResult` with a summary dict keyed as
`vllm bench serve` keys its JSON, a per-request DataFrame and (optionally) a per-step DataFrame.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd
import simpy

from specdec_sim.costmodel import Calibration, CalibrationError, CostModel, DraftCost, load_calibration
from specdec_sim.costmodel.policy_view import policy_calibration
from specdec_sim.policies import make_policy
from specdec_sim.policies.base import FixedK, NoSpeculation, Policy
from specdec_sim.acceptance.draws import AcceptanceDrawer, AlphaSampler
from specdec_sim.acceptance.rates import preset_position_rates, resolve_mean_alpha
from specdec_sim.simulator.arrivals import ConcurrencyGate, admission, send_requests
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine_mode import EngineLimits, engine_summary, prefix_cache_summary, resolve_limits
from specdec_sim.simulator.kvcache import KVCache, PrefixCache
from specdec_sim.acceptance.measured import MeasuredAcceptance, build_measured
from specdec_sim.simulator.recorder import Recorder
from specdec_sim.simulator.replica import Replica
from specdec_sim.simulator.request import Request
from specdec_sim.simulator.scheduler import Scheduler
from specdec_sim.acceptance.spec_metrics import merge, run_spec_summary
from specdec_sim.simulator.step_noise import StepTimeNoise
from specdec_sim.simulator.summary import mark_unfinished, request_frame, summarize



@dataclass
class SimResult:
    summary: dict
    requests: pd.DataFrame
    steps: pd.DataFrame | None
    config: SimConfig
    policy_name: str


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


def build_cost_model(config: SimConfig, calibration: Calibration | None = None,
                     drafter: bool = True) -> tuple[CostModel, Calibration]:
    """The true cost model (what advances the clock) and its calibration; `drafter` False for runs that never
    speculate (no proposer loaded, so no draft prefill is charged)."""
    cal = priced_for_style(calibration or load_calibration(config.calibration), config.style)
    return CostModel(cal, drafter=drafter), cal


def priced_for_style(cal: Calibration, style: str) -> Calibration:
    """`cal` as it prices `style`'s drafting; CalibrationError (one line) for a proposer it cannot price."""
    if style == "ngram":
        if cal.draft.kind == "fraction":
            return cal
        if cal.ngram_fraction_of_target > 0:
            return replace(cal, draft=DraftCost(kind="fraction", fraction_of_target=cal.ngram_fraction_of_target))
        raise CalibrationError(f"--style ngram: calibration {cal.name} prices {cal.draft.kind} drafting and states no "
                               "n-gram cost (ngram_fraction_of_target); use an n-gram calibration")
    if cal.draft.kind == "fraction":
        raise CalibrationError(f"--style {style}: calibration {cal.name} prices prompt lookup (n-gram) drafting only; "
                               "use --style ngram or a draft-model/EAGLE calibration")
    return cal


def build_policy_cost_model(config: SimConfig, truth: Calibration) -> CostModel:
    """What the policies price candidate steps with (--policy-calibration: fitted, same, or a calibration)."""
    view = policy_calibration(truth, config.policy_calibration.strip(), load_calibration)
    if view is truth:
        return CostModel(truth)
    return CostModel(priced_for_style(view, config.style))


def never_speculates(policy: Policy) -> bool:
    """No speculation at all (the engine then loads no proposer): `none` and `fixed:0`."""
    return isinstance(policy, NoSpeculation) or (isinstance(policy, FixedK) and policy.k == 0)


def run_simulation(trace, config: SimConfig, policy: str | Policy = "none", seed: int = 0,
                   progress: bool | Callable[[int], None] = False, calibration: Calibration | None = None) -> SimResult:
    """Replay `trace` through `config.replicas` replicas under `policy`; deterministic for a given seed."""
    config.validate()
    if not isinstance(policy, str) and config.replicas > 1:
        raise ValueError("pass a policy spec string when simulating several replicas (each needs its own state)")
    policies = [make_policy(policy) if isinstance(policy, str) else policy for _ in range(config.replicas)]
    cost, cal = build_cost_model(config, calibration, drafter=not never_speculates(policies[0]))
    policy_cost = build_policy_cost_model(config, cal)
    num_blocks = config.kv_blocks or cal.memory.num_kv_blocks(config.block_size)  # KV bytes fixed, blocks scale
    if num_blocks < 1:
        raise ValueError(f"calibration {cal.name}: no memory left for the KV cache; give --kv-blocks")
    mean_alpha = resolve_mean_alpha(config.acceptance)
    position_rates = tuple(config.position_rates) or preset_position_rates(config.acceptance)
    limits = resolve_limits(config, cal)
    trace, server = _served_trace(trace, limits, config)
    hash_tokens = caching_block_tokens(trace, limits)
    n = len(trace)
    on_finish = progress if callable(progress) else None
    recorder = Recorder(n, config.record_steps, on_finish)
    env = simpy.Environment()
    rng = random.Random(seed)
    measured = build_measured(config, trace, seed)
    replicas = [_replica(env, i, cost, policy_cost, policies[i], config, limits, num_blocks, recorder,
                         random.Random(seed * 1_000_003 + i), position_rates, seed, measured is not None,
                         hash_tokens)
                for i in range(config.replicas)]
    route = _routers(config, replicas, rng)
    sampler = AlphaSampler(mean_alpha, config.acceptance_spread, seed)
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
    peak_kv = max(rep.scheduler.kv.peak_used for rep in replicas) / num_blocks
    summary = summarize(trace, recorder, config, policies[0].name, cal, num_blocks, peak_kv, policy_cost.calibration)
    summary.update(engine_summary(limits, config))
    summary.update(prefix_cache_summary([rep.scheduler for rep in replicas]))
    summary.update(run_spec_summary(recorder.draft_steps, recorder.draft_tokens, recorder.accepted_tokens,
                                    merge(rep.acceptance.positions for rep in replicas)))
    requests = request_frame(trace, recorder)
    steps = recorder.step_frame() if config.record_steps else None
    return SimResult(summary, requests, steps, config, policies[0].name)



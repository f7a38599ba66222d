"""Cluster simulation: arrivals from a trace, a router, N replica processes on one SimPy clock, and records.

`run_simulation(trace, config, policy, seed)` is the single entry point used by the CLI, the
sweep runner, benchmarks and tests. It returns a `SimResult` with a summary dict keyed as
`vllm bench serve` keys its JSON, a per-request DataFrame and (optionally) a per-step DataFrame.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable

import pandas as pd
import simpy

from specdec_sim.costmodel import Calibration, CostModel, DraftCost, load_calibration
from specdec_sim.costmodel.policy_view import policy_calibration
from specdec_sim.policies import make_policy
from specdec_sim.policies.base import FixedK, NoSpeculation, Policy
from specdec_sim.simulator.acceptance import AcceptanceDrawer, AlphaSampler, preset_position_rates, resolve_mean_alpha
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.kvcache import KVCache
from specdec_sim.simulator.recorder import Recorder
from specdec_sim.simulator.replica import Replica
from specdec_sim.simulator.request import Request
from specdec_sim.simulator.scheduler import Scheduler
from specdec_sim.simulator.step_noise import StepTimeNoise
from specdec_sim.simulator.summary import mark_unfinished, request_frame, summarize

NGRAM_DRAFT = DraftCost(kind="fraction", fraction_of_target=0.04)  # reference 1.4: n-gram draft = 4 % of target


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


def _arrivals(env: simpy.Environment, trace, route, sampler: AlphaSampler, recorder: Recorder):
    arrival = trace.arrival_s
    ids, prompts, outputs = trace.request_id, trace.prompt_tokens, trace.output_tokens
    for i in range(len(arrival)):
        t = float(arrival[i])
        if t > env.now:
            yield env.timeout(t - env.now)
        req = Request(i, int(ids[i]), int(prompts[i]), int(outputs[i]), sampler.next_alpha())
        route(req).enqueue(req)
        recorder.arrived(req)


def _tree_sampler(style: str):
    if style != "tree":
        return None
    try:
        from specdec_sim.policies.tree import sample_accepted_tree
    except ImportError:
        return None
    return sample_accepted_tree


def _replica(env: simpy.Environment, index: int, cost: CostModel, policy_cost: CostModel, policy: Policy,
             config: SimConfig, num_blocks: int, recorder: Recorder, rng: random.Random,
             position_rates: tuple[float, ...], seed: int) -> Replica:
    """One replica: its KV cache, scheduler and acceptance stream, driven by a SimPy process."""
    scheduler = Scheduler(KVCache(num_blocks, config.block_size), config.max_num_seqs, config.max_num_batched_tokens,
                          config.chunked_prefill, config.spec_in_prefill_steps, config.max_k)
    acceptance = AcceptanceDrawer(config.acceptance_mode, config.style, rng, position_rates,
                                  _tree_sampler(config.style), config.ngram_match_prob)
    noise = StepTimeNoise(config.step_time_noise, seed * 1_000_003 + index) if config.step_time_noise > 0 else None
    return Replica(env, index, cost, policy, scheduler, acceptance, recorder, rng, config.style, policy_cost, noise)


def build_cost_model(config: SimConfig, calibration: Calibration | None = None,
                     drafter: bool = True) -> tuple[CostModel, Calibration]:
    """The true cost model (what advances the clock) and its calibration; `drafter` False for runs that never
    speculate (no proposer loaded, so no draft prefill is charged)."""
    cal = calibration or load_calibration(config.calibration)
    if config.style == "ngram" and cal.draft.kind != "fraction":
        cal = replace(cal, draft=NGRAM_DRAFT)
    return CostModel(cal, drafter=drafter), cal


def build_policy_cost_model(config: SimConfig, truth: Calibration) -> CostModel:
    """What the policies price candidate steps with (--policy-calibration: fitted, same, or a calibration)."""
    view = policy_calibration(truth, config.policy_calibration.strip(), load_calibration)
    if view is truth:
        return CostModel(truth)
    if config.style == "ngram" and view.draft.kind != "fraction":
        view = replace(view, draft=NGRAM_DRAFT)
    return CostModel(view)


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
    n = len(trace)
    on_finish = progress if callable(progress) else None
    recorder = Recorder(n, config.record_steps, on_finish)
    env = simpy.Environment()
    rng = random.Random(seed)
    replicas = [_replica(env, i, cost, policy_cost, policies[i], config, num_blocks, recorder,
                         random.Random(seed * 1_000_003 + i), position_rates, seed) for i in range(config.replicas)]
    route = _routers(config, replicas, rng)
    sampler = AlphaSampler(mean_alpha, config.acceptance_spread, seed)
    env.process(_arrivals(env, trace, route, sampler, recorder))
    env.run(until=config.max_sim_time_s)
    in_flight = [req for rep in replicas for req in list(rep.scheduler.running) + list(rep.scheduler.waiting)]
    mark_unfinished(recorder, in_flight, stopped=config.max_sim_time_s is not None)
    peak_kv = max(rep.scheduler.kv.peak_used for rep in replicas) / num_blocks
    summary = summarize(trace, recorder, config, policies[0].name, cal, num_blocks, peak_kv, policy_cost.calibration)
    requests = request_frame(trace, recorder)
    steps = recorder.step_frame() if config.record_steps else None
    return SimResult(summary, requests, steps, config, policies[0].name)



"""Cluster simulation: arrivals from a trace, a router, N replica processes on one SimPy clock, and records.

`run_simulation(trace, config, policy, seed)` is the single entry point used by the CLI, the
sweep runner, benchmarks and tests. It returns a `SimResult` with a summary dict keyed as
`vllm bench serve` keys its JSON, a per-request DataFrame and (optionally) a per-step DataFrame.
"""
from __future__ import annotations

import random
from array import array
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd
import simpy

from specdec_sim.policies import make_policy
from specdec_sim.policies.base import Policy
from specdec_sim.simulator.acceptance import AlphaSampler, preset_position_rates, resolve_mean_alpha
from specdec_sim.simulator.config import SimConfig
from specdec_sim.costmodel import Calibration, CostModel, DraftCost, load_calibration
from specdec_sim.simulator.metrics import LogHistogram, describe_histogram_ms, describe_ms, slo_good_mask
from specdec_sim.simulator.replica import Replica
from specdec_sim.simulator.request import Request

STATUS_PENDING, STATUS_DONE, STATUS_FAILED = 0, 1, 2
STEP_COLUMNS = ("replica", "step", "start_s", "step_time_s", "draft_s", "verify_s", "overhead_s", "num_decode",
                "num_prefill", "prefill_tokens", "verify_tokens", "kv_tokens", "k_mean", "k_max", "proposed",
                "accepted", "emitted", "est_alpha", "kv_blocks_used", "queue_len")
FLOAT_STEP_COLUMNS = ("start_s", "step_time_s", "draft_s", "verify_s", "overhead_s", "k_mean", "est_alpha")
NGRAM_DRAFT = DraftCost(kind="fraction", fraction_of_target=0.04)  # reference 1.4: n-gram draft = 4 % of target


@dataclass
class SimResult:
    summary: dict
    requests: pd.DataFrame
    steps: pd.DataFrame | None
    config: SimConfig
    policy_name: str


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
        self.itl = self.itl_hist.add  # itl(gap_s, count=1)
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
        self.peak_kv_fraction = 0.0
        self.completed = 0
        self.on_finish = on_finish

    def kv_used(self, used: int, total: int) -> None:
        if used > total:
            raise AssertionError(f"KV cache over budget: {used} > {total} blocks")
        frac = used / total
        if frac > self.peak_kv_fraction:
            self.peak_kv_fraction = frac

    def preempted(self, req: Request) -> None:
        self.total_preemptions += 1

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

    def step(self, replica: Replica, start: float, timing, shape, acc: int, emitted: int) -> None:
        self.num_steps_total += 1
        self.busy_s += timing.total_s
        decode = shape.num_decode
        proposed = shape.verify_tokens - decode
        self.draft_steps += shape.num_proposing
        self.draft_tokens += proposed
        self.accepted_tokens += acc
        self.decode_request_steps += decode
        self.sum_k += proposed
        if not self.record_steps:
            return
        est = replica.policy.estimated_alpha()
        self.step_data.extend((replica.index, replica.decode_steps, start, timing.total_s, timing.draft_s, timing.verify_s,
               timing.overhead_s, shape.num_decode, shape.num_prefill, shape.prefill_tokens, shape.verify_tokens,
               shape.kv_tokens, proposed / decode if decode else 0.0, shape.max_k if decode else 0, proposed, acc,
               emitted,
               np.nan if est is None else est, replica.total_blocks - replica.free_blocks, len(replica.waiting)))

    def step_frame(self) -> pd.DataFrame:
        table = np.frombuffer(self.step_data, dtype=np.float64).reshape(-1, len(STEP_COLUMNS))
        frame = pd.DataFrame(table, columns=list(STEP_COLUMNS))
        for col in STEP_COLUMNS:
            if col not in FLOAT_STEP_COLUMNS:
                frame[col] = frame[col].astype(np.int64)
        return frame


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
        req = Request(i, int(ids[i]), t, int(prompts[i]), int(outputs[i]), sampler.next_alpha())
        replica = route(req)
        recorder.alpha[i] = req.alpha
        recorder.replica[i] = replica.index
        replica.enqueue(req)


def _tree_sampler(style: str):
    if style != "tree":
        return None
    try:
        from specdec_sim.policies.tree import sample_accepted_tree
    except ImportError:
        return None
    return sample_accepted_tree


def build_cost_model(config: SimConfig, calibration: Calibration | None = None) -> tuple[CostModel, Calibration]:
    cal = calibration or load_calibration(config.calibration)
    if config.style == "ngram" and cal.draft.kind != "fraction":
        cal = replace(cal, draft=NGRAM_DRAFT)
    return CostModel(cal), cal


def run_simulation(trace, config: SimConfig, policy: str | Policy = "none", seed: int = 0,
                   progress: bool | Callable[[int], None] = False, calibration: Calibration | None = None) -> SimResult:
    """Replay `trace` through `config.replicas` replicas under `policy`; deterministic for a given seed."""
    config.validate()
    cost, cal = build_cost_model(config, calibration)
    num_blocks = config.kv_blocks or cal.memory.num_kv_blocks()
    if num_blocks < 1:
        raise ValueError(f"calibration {cal.name}: no memory left for the KV cache; give --kv-blocks")
    mean_alpha = resolve_mean_alpha(config.acceptance)
    position_rates = tuple(config.position_rates) or preset_position_rates(config.acceptance)
    n = len(trace)
    on_finish = progress if callable(progress) else None
    recorder = Recorder(n, config.record_steps, on_finish)
    env = simpy.Environment()
    rng = random.Random(seed)
    if not isinstance(policy, str) and config.replicas > 1:
        raise ValueError("pass a policy spec string when simulating several replicas (each needs its own state)")
    policies = [make_policy(policy) if isinstance(policy, str) else policy for _ in range(config.replicas)]
    replicas = [Replica(env, i, cost, policies[i], config, num_blocks, recorder, random.Random(seed * 1_000_003 + i),
                        position_rates, _tree_sampler(config.style)) for i in range(config.replicas)]
    route = _routers(config, replicas, rng)
    sampler = AlphaSampler(mean_alpha, config.acceptance_spread, seed)
    env.process(_arrivals(env, trace, route, sampler, recorder))
    env.run(until=config.max_sim_time_s)
    _mark_unfinished(recorder, replicas, config)
    summary = summarize(trace, recorder, config, policies[0].name, cal, num_blocks)
    requests = request_frame(trace, recorder)
    steps = recorder.step_frame() if config.record_steps else None
    return SimResult(summary, requests, steps, config, policies[0].name)


def _mark_unfinished(recorder: Recorder, replicas: list[Replica], config: SimConfig) -> None:
    reason = ("simulation stopped at --max-sim-time" if config.max_sim_time_s is not None
              else "engine stalled before the request finished")
    for rep in replicas:
        for req in list(rep.running) + list(rep.waiting):
            if recorder.status[req.index] == STATUS_PENDING:
                recorder.fail(req, 0.0, reason)
    pending = np.flatnonzero(recorder.status == STATUS_PENDING)
    for i in pending:  # never arrived before the stop time
        recorder.status[i] = STATUS_FAILED
        recorder.reasons[int(i)] = "did not arrive before --max-sim-time"


def request_frame(trace, rec: Recorder) -> pd.DataFrame:
    arrival = trace.arrival_s
    ttft = rec.first_token_s - arrival
    e2el = rec.finish_s - arrival
    out = trace.output_tokens
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (e2el - ttft) / (out - 1), np.nan)
    status = np.where(rec.status == STATUS_DONE, "finished", "failed")
    reasons = [""] * len(arrival)
    for i, why in rec.reasons.items():
        reasons[i] = why
    return pd.DataFrame({
        "request_id": trace.request_id, "replica": rec.replica, "arrival_s": arrival,
        "first_token_s": rec.first_token_s, "finish_s": rec.finish_s, "ttft_ms": ttft * 1000.0,
        "tpot_ms": tpot * 1000.0, "e2el_ms": e2el * 1000.0, "prompt_tokens": trace.prompt_tokens,
        "output_tokens": out, "emitted_tokens": rec.emitted, "steps": rec.num_steps,
        "preemptions": rec.preemptions, "alpha": rec.alpha, "status": status, "reason": reasons})


def summarize(trace, rec: Recorder, config: SimConfig, policy_name: str, cal: Calibration, num_blocks: int) -> dict:
    done = rec.status == STATUS_DONE
    arrival = trace.arrival_s
    ttft = (rec.first_token_s - arrival)[done]
    e2el = (rec.finish_s - arrival)[done]
    out = trace.output_tokens[done]
    multi = out > 1
    tpot = (e2el[multi] - ttft[multi]) / (out[multi] - 1)
    duration = float(np.nanmax(rec.finish_s) - arrival.min()) if done.any() else 0.0
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    total_out = int(out.sum())
    total_in = int(trace.prompt_tokens[done].sum())
    summary: dict = {"policy": policy_name, "calibration": cal.name, "replicas": config.replicas,
                     "completed": int(done.sum()), "failed": int((~done).sum()), "duration_s": duration,
                     "total_input_tokens": total_in, "total_output_tokens": total_out,
                     "request_throughput": per_s(float(done.sum())), "output_throughput": per_s(total_out),
                     "total_token_throughput": per_s(total_in + total_out)}
    summary.update(describe_ms("ttft", ttft))
    summary.update(describe_ms("tpot", tpot))
    summary.update(describe_histogram_ms("itl", rec.itl_hist))
    summary.update(describe_ms("e2el", e2el))
    if config.slo_ms:
        full_tpot = np.zeros(out.shape)
        full_tpot[multi] = tpot
        good = slo_good_mask(ttft, full_tpot, e2el, config.slo_ms)
        summary["request_goodput"] = per_s(float(good.sum()))
        summary["slo_attainment"] = float(good.mean()) if good.size else 0.0
    summary.update({
        "num_drafts": rec.draft_steps, "num_draft_tokens": rec.draft_tokens, "num_accepted_tokens": rec.accepted_tokens,
        "mean_acceptance_length": 1.0 + rec.accepted_tokens / rec.draft_steps if rec.draft_steps else 1.0,
        "draft_acceptance_rate": rec.accepted_tokens / rec.draft_tokens if rec.draft_tokens else 0.0,
        "mean_k": rec.sum_k / rec.decode_request_steps if rec.decode_request_steps else 0.0,
        "spec_goodput_tok_s": (int(rec.emitted.sum()) / rec.busy_s) if rec.busy_s else 0.0,
        "num_steps": rec.num_steps_total, "preemptions": rec.total_preemptions,
        "kv_blocks_per_replica": num_blocks, "peak_kv_utilization": rec.peak_kv_fraction})
    return summary

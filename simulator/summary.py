"""Outcomes of a finished simulation: the per-request table, the summary under vLLM's key names, summary.json.

summary.json is assembled here and nowhere else (`summary_record`), from the run's in-memory result
(`run_summary` makes SimResult.summary: metrics, speculation counters, pricing, engine limits, prefix
cache, vLLM's spec-decode keys) and the run's calibration; the report writes it and prints the table
from the same record.

TTFT, TPOT, ITL and E2EL are named and defined as `vllm bench serve` defines them and count only requests
that finished: TTFT = first token - arrival; TPOT = (E2EL - TTFT) / (output_tokens - 1) for outputs > 1;
ITL = gaps between consecutive emitted chunks (one per step that emits, so a speculative step that emits
several tokens is one gap), pooled over the finished requests in the recorder's log-spaced histogram (its
mean is exact); E2EL = finish - arrival. Percentiles use numpy's linear interpolation. A metric with no
samples (nothing completed, or no output longer than one token) is NaN (null in summary.json), never a
number made up from zero samples. `duration` is vLLM's benchmark
duration (first arrival to last finish, s); `duration_s` is the same number under its older name.
`request_goodput` is present always, null without --slo (as vLLM writes it without --goodput).
Counters follow vLLM V1's spec-decode metrics (num_drafts, draft and accepted tokens).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import math

import numpy as np
import pandas as pd

from specdec_sim.acceptance.spec_metrics import run_spec_summary
from specdec_sim.costmodel import Calibration
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.request import Request
from specdec_sim.simulator.recorder import STATUS_DONE, STATUS_FAILED, STATUS_PENDING, LogHistogram, Recorder


PERCENTILES = (50, 90, 99)


def describe_ms(name: str, values_s: np.ndarray) -> dict[str, float]:
    """mean/median/std/p90/p99 of a metric in milliseconds under vLLM key names (NaN without samples)."""
    out: dict[str, float] = {}
    if values_s.size == 0:
        return {key: math.nan for key in metric_keys(name)}
    ms = values_s * 1000.0
    out[f"mean_{name}_ms"] = float(ms.mean())
    out[f"median_{name}_ms"] = float(np.percentile(ms, 50))
    out[f"std_{name}_ms"] = float(ms.std())
    for p in PERCENTILES[1:]:
        out[f"p{p}_{name}_ms"] = float(np.percentile(ms, p))
    return out


def metric_keys(name: str) -> list[str]:
    """The summary keys describe_ms writes for `name`: mean, median, std, p90, p99 (ms)."""
    return [f"mean_{name}_ms", f"median_{name}_ms", f"std_{name}_ms"] + [f"p{p}_{name}_ms" for p in PERCENTILES[1:]]


def describe_histogram_ms(name: str, hist: LogHistogram) -> dict[str, float]:
    out = {f"mean_{name}_ms": hist.mean() * 1000.0, f"median_{name}_ms": hist.percentile(50) * 1000.0,
           f"std_{name}_ms": hist.std() * 1000.0}
    for p in PERCENTILES[1:]:
        out[f"p{p}_{name}_ms"] = hist.percentile(p) * 1000.0
    return out


def slo_good_mask(ttft_s: np.ndarray, tpot_s: np.ndarray, e2el_s: np.ndarray, slo_ms: dict[str, float]) -> np.ndarray:
    """vLLM --goodput: a request is good iff every given metric is <= its SLO (TPOT of 1-token outputs is 0)."""
    good = np.ones(ttft_s.shape, dtype=bool)
    values = {"ttft": ttft_s, "tpot": np.nan_to_num(tpot_s, nan=0.0), "e2el": e2el_s}
    for key, limit in slo_ms.items():
        good &= values[key] * 1000.0 <= limit
    return good


def mark_unfinished(recorder: Recorder, in_flight: Iterable[Request], stopped: bool) -> None:
    """Fail the requests still running or waiting when the clock stopped, and those that never arrived."""
    reason = "simulation stopped at --max-sim-time" if stopped else "engine stalled before the request finished"
    for req in in_flight:
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


def policy_pricing(truth: Calibration, view: Calibration | None, config: SimConfig) -> dict:
    """What the policy priced steps with, and the noise on the true step times, for summary.json."""
    view = truth if view is None else view
    out: dict = {"policy_calibration": "same" if view is truth else view.name,
                 "policy_calibration_option": config.policy_calibration,
                 "step_time_noise_sigma": config.step_time_noise}
    err = view.fit_error.get("policy_view") if view is not truth else None
    if isinstance(err, dict):
        out["policy_calibration_fit_mape_pct"] = err.get("mape_pct")
        out["policy_calibration_fit_max_abs_pct"] = err.get("max_abs_pct")
    return out


def run_metrics(trace, rec: Recorder, config: SimConfig, policy_name: str, cal: Calibration, num_blocks: int,
              peak_kv_fraction: float, policy_cal: Calibration | None = None) -> dict:
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
                     "completed": int(done.sum()), "failed": int((~done).sum()), "duration": duration,
                     "duration_s": duration,
                     "total_input_tokens": total_in, "total_output_tokens": total_out,
                     "request_throughput": per_s(float(done.sum())), "output_throughput": per_s(total_out),
                     "total_token_throughput": per_s(total_in + total_out)}
    summary.update(describe_ms("ttft", ttft))
    summary.update(describe_ms("tpot", tpot))
    summary.update(describe_histogram_ms("itl", rec.itl_hist))
    summary.update(describe_ms("e2el", e2el))
    summary["request_goodput"] = None
    if config.slo_ms:
        full_tpot = np.zeros(out.shape)
        full_tpot[multi] = tpot
        good = slo_good_mask(ttft, full_tpot, e2el, config.slo_ms)
        summary["request_goodput"] = per_s(float(good.sum()))
        summary["slo_attainment"] = float(good.mean()) if good.size else math.nan
    summary.update({
        "num_drafts": rec.draft_steps, "num_draft_tokens": rec.draft_tokens, "num_accepted_tokens": rec.accepted_tokens,
        "mean_acceptance_length": 1.0 + rec.accepted_tokens / rec.draft_steps if rec.draft_steps else 1.0,
        "draft_acceptance_rate": rec.accepted_tokens / rec.draft_tokens if rec.draft_tokens else 0.0,
        "mean_k": rec.sum_k / rec.decode_request_steps if rec.decode_request_steps else 0.0,
        "spec_goodput_tok_s": (int(rec.emitted.sum()) / rec.busy_s) if rec.busy_s else 0.0,
        "num_steps": rec.num_steps_total, "preemptions": rec.total_preemptions,
        "kv_blocks_per_replica": num_blocks, "peak_kv_utilization": peak_kv_fraction})
    summary.update(policy_pricing(cal, policy_cal, config))
    return summary


@dataclass
class EngineOutcome:
    """What the engine hands the summary besides the recorder: the policy's name, the KV peak, the schedulers
    (prefix-cache counters) and the pooled per-position acceptance counts."""

    policy_name: str
    peak_kv_fraction: float
    schedulers: list
    positions: object  # acceptance.spec_metrics.PositionCounts
    dynamic_k: bool = False  # the policy varies k: every step paid the calibration's dynamic-k tax


def engine_keys(limits, config: SimConfig) -> dict:
    """The engine keys of summary.json: what was modelled and the limits it ran with."""
    return {"engine": limits.engine, "max_num_seqs": limits.max_num_seqs,
            "max_num_batched_tokens": limits.max_num_batched_tokens, "chunked_prefill": limits.chunked_prefill,
            "spec_in_mixed_steps": limits.spec_in_prefill_steps, "prefix_caching": limits.prefix_caching,
            "kv_watermark": limits.watermark, "max_model_len": limits.max_model_len, "max_tokens": config.max_tokens,
            "oracle_lengths": config.oracle_lengths, "max_concurrency": config.max_concurrency}


def dynamic_k_tax_keys(cal: Calibration, charged: bool, rec: Recorder) -> dict:
    """What the run paid for varying k (vLLM #49548: PIECEWISE instead of FULL CUDA graphs): whether it was charged,
    the calibration's rates and the seconds charged in all (per step, plus per speculating step)."""
    total_ms = (cal.dynamic_k_tax_ms * rec.num_steps_total + cal.dynamic_k_tax_spec_ms * rec.speculating_steps
                if charged else 0.0)
    graphs = "piecewise" if charged else "full"
    if cal.cuda_graph_max_batch:  # V0: graphs captured up to a batch size, larger forwards eager
        graphs += f" up to {cal.cuda_graph_max_batch} sequences, eager beyond"
    return {"cuda_graphs": graphs, "dynamic_k_tax_charged": charged,
            "dynamic_k_tax_ms_per_step": cal.dynamic_k_tax_ms,
            "dynamic_k_tax_ms_per_speculating_step": cal.dynamic_k_tax_spec_ms,
            "dynamic_k_tax_total_s": total_ms / 1000.0}


def prefix_cache_keys(schedulers) -> dict:
    """Prefix-cache keys of summary.json (vLLM's hit rate: cached prompt tokens over prompt tokens looked up) and the
    prefill tokens actually computed; the hit keys are null when no cache ran (no hashes, or caching off)."""
    caches = [s.kv.prefix for s in schedulers if s.kv.prefix is not None]
    queries = sum(c.query_tokens for c in caches)
    hits = sum(c.hit_tokens for c in caches)
    return {"prefix_cache_queries_tokens": queries if caches else None,
            "prefix_cache_hits_tokens": hits if caches else None,
            "prefix_cache_hit_rate": (hits / queries if queries else 0.0) if caches else None,
            "prefill_tokens_computed": sum(s.prefill_tokens_computed for s in schedulers)}


def run_summary(trace, rec: Recorder, engine, outcome: EngineOutcome) -> dict:
    """A finished run's metrics under vLLM's key names (SimResult.summary): latency and throughput, the
    speculation counters, what the policy priced with, the engine and its limits, the prefix cache, and
    vLLM's spec-decode keys (acceptance/spec_metrics.py: absent when nothing was drafted)."""
    summary = run_metrics(trace, rec, engine.config, outcome.policy_name, engine.calibration, engine.num_blocks,
                          outcome.peak_kv_fraction, engine.policy_calibration)
    summary.update(engine_keys(engine.limits, engine.config))
    summary.update(dynamic_k_tax_keys(engine.calibration, outcome.dynamic_k, rec))
    summary.update(prefix_cache_keys(outcome.schedulers))
    summary.update(run_spec_summary(rec.draft_steps, rec.draft_tokens, rec.accepted_tokens, outcome.positions))
    return summary


VLLM_DATE_FORMAT = "%Y%m%d-%H%M%S"  # what `vllm bench serve` writes as "date"
TRAFFIC_KEYS = ("trace", "trace_path", "trace_sha256", "rate", "burstiness", "num_requests", "time_scale",
                "duration", "max_requests", "max_concurrency")
REPLAY_NOTE = ("arrivals replayed from the trace: request_rate is the offered rate, requests / (last arrival - "
               "first arrival); 'inf' when all arrive at once")


def run_date(run_info: dict) -> str:
    """vLLM's date stamp: run_info["date"], else $SOURCE_DATE_EPOCH (reproducible files), else now (local)."""
    import datetime as dt
    import os

    if run_info.get("date"):
        return str(run_info["date"])
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    if epoch.isdigit():
        return dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc).strftime(VLLM_DATE_FORMAT)
    return dt.datetime.now().strftime(VLLM_DATE_FORMAT)


def offered_rate(arrival_s: np.ndarray) -> float | str:
    """Requests per second of a replayed arrival sequence; 'inf' (vLLM's spelling) when all arrive at once."""
    if len(arrival_s) < 2:
        return "inf"
    span = float(np.max(arrival_s) - np.min(arrival_s))
    return len(arrival_s) / span if span > 0 else "inf"


def calibration_record(cal: Calibration) -> dict:
    """The calibration's description, device, fit error and provenance (summary.json's `calibration_info`)."""
    return {"name": cal.name, "description": cal.description, "device": cal.device, "fit_error": cal.fit_error,
            "provenance": cal.provenance}


def model_id(calibration: dict) -> str:
    """The target model: the profiler's provenance.target_model, else the description's '<model> target', else the name."""
    provenance = calibration.get("provenance") or {}
    for key in ("target_model", "model_id"):
        if isinstance(provenance.get(key), str) and provenance[key]:
            return provenance[key]
    description = str(calibration.get("description") or "")
    head, sep, _ = description.partition(" target")
    return head.strip() if sep and head.strip() else str(calibration.get("name", ""))


def run_metadata(requests: pd.DataFrame, cal: Calibration, spec: str, seed: int, run_info: dict | None) -> dict:
    """vLLM `bench serve` run keys (date, model_id, num_prompts, request_rate, burstiness, max_concurrency), then ours."""
    info = dict(run_info or {})
    calibration = calibration_record(cal)
    synthetic = info.get("rate") is not None
    meta = {"date": run_date(info), "model_id": model_id(calibration), "num_prompts": int(len(requests)),
            "request_rate": info["rate"] if synthetic else offered_rate(requests["arrival_s"].to_numpy()),
            "burstiness": info.get("burstiness", 1.0) if synthetic else None,
            "max_concurrency": info.get("max_concurrency"), "policy_spec": spec, "seed": seed}
    if not synthetic:
        meta["request_rate_note"] = REPLAY_NOTE
    meta["traffic"] = {key: info.get(key) for key in TRAFFIC_KEYS}
    meta["calibration_info"] = calibration
    meta["version"] = info.get("version") or package_version()
    meta["command"] = info.get("command")
    return meta


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("specdec-sim")
    except PackageNotFoundError:
        return "unknown"


def summary_record(result, spec: str, seed: int, run_info: dict | None = None) -> dict:
    """summary.json of one policy, assembled here and only here from the in-memory result: vLLM's run keys, the
    metrics, the traffic, the calibration the run advanced its clock with and the engine config."""
    cal = result.calibration
    if cal is None:  # a result made by hand, not by run_simulation
        from specdec_sim.costmodel import load_calibration

        cal = load_calibration(result.config.calibration)
    meta = run_metadata(result.requests, cal, spec, seed, run_info)
    described = {k: meta.pop(k) for k in ("traffic", "calibration_info", "version", "command")}
    return {**meta, **result.summary, **described, "config": result.config.to_dict()}

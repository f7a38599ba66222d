"""Outcomes of a finished simulation: the per-request table and the summary under vLLM's key names.

TTFT, TPOT, ITL and E2EL follow `vllm bench serve` (see metrics.py); counters follow vLLM V1's
spec-decode metrics (num_drafts, draft and accepted tokens).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from specdec_sim.costmodel import Calibration
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.metrics import describe_histogram_ms, describe_ms, slo_good_mask
from specdec_sim.simulator.request import Request
from specdec_sim.simulator.recorder import STATUS_DONE, STATUS_FAILED, STATUS_PENDING, Recorder


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


def summarize(trace, rec: Recorder, config: SimConfig, policy_name: str, cal: Calibration, num_blocks: int,
              peak_kv_fraction: float) -> dict:
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
        "kv_blocks_per_replica": num_blocks, "peak_kv_utilization": peak_kv_fraction})
    return summary

"""Capacity search: bisection on fake monotone latency curves, SLO parsing, and the real simulator."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from specdec_sim.simulator.sweep.capacity import find_capacity, meets_slo, parse_capacity_slo
from specdec_sim.simulator.config import ConfigError


def knee_latency(knee: float):
    """A monotone fake: p99 TTFT crosses 1000 ms exactly at rate == knee."""
    calls: list[float] = []

    def run(rate: float) -> dict[str, float]:
        calls.append(rate)
        return {"completed": 100, "failed": 0, "p99_ttft_ms": 1000.0 * rate / knee,
                "mean_tpot_ms": 20.0}

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_bisection_finds_knee_within_tol():
    run = knee_latency(7.3)
    res = find_capacity(run, {"p99_ttft_ms": 1000.0}, lo=0.5, hi=32.0, tol=0.05)
    assert res.status == "ok"
    assert res.capacity <= 7.3 < res.capacity + 0.05
    assert res.lo == res.capacity and res.hi - res.lo <= 0.05
    assert res.evaluations == len(run.calls) <= 2 + math.ceil(math.log2(31.5 / 0.05))
    assert res.metrics_at_capacity()["p99_ttft_ms"] <= 1000.0


@settings(max_examples=60, deadline=None)
@given(knee=st.floats(0.6, 30.0), tol=st.floats(0.01, 2.0))
def test_bisection_exact_within_tol_property(knee: float, tol: float):
    res = find_capacity(knee_latency(knee), {"p99_ttft_ms": 1000.0}, lo=0.5, hi=32.0, tol=tol)
    assert res.capacity <= knee + 1e-9
    assert knee - res.capacity <= tol + 1e-9


def test_bracket_edges_and_growth():
    slo = {"p99_ttft_ms": 1000.0}
    below = find_capacity(knee_latency(0.2), slo, lo=0.5, hi=8.0, tol=0.1)
    assert below.status == "below-bracket" and below.capacity == 0.0 and below.evaluations == 1
    above = find_capacity(knee_latency(50.0), slo, lo=0.5, hi=8.0, tol=0.1)
    assert above.status == "above-bracket" and above.capacity == 8.0
    grown = find_capacity(knee_latency(50.0), slo, lo=0.5, hi=8.0, tol=0.1, max_grow=3)
    assert grown.status == "ok" and 49.9 <= grown.capacity <= 50.0


def test_two_metric_slo_binds_on_the_tighter_one():
    def run(rate: float) -> dict[str, float]:
        return {"p99_ttft_ms": 100 * rate, "mean_tpot_ms": 10 * rate}

    res = find_capacity(run, {"p99_ttft_ms": 2000.0, "mean_tpot_ms": 50.0}, lo=1, hi=40, tol=0.01)
    assert 4.99 <= res.capacity <= 5.0


def test_bad_bracket_and_tol():
    with pytest.raises(ValueError):
        find_capacity(knee_latency(1), {"p99_ttft_ms": 1.0}, lo=4, hi=2, tol=0.1)
    with pytest.raises(ValueError):
        find_capacity(knee_latency(1), {"p99_ttft_ms": 1.0}, lo=1, hi=2, tol=0)


def test_meets_slo_rejects_missing_nan_and_failures():
    slo = {"p99_ttft_ms": 100.0}
    assert meets_slo({"p99_ttft_ms": 50.0}, slo)
    assert not meets_slo({"p99_ttft_ms": float("nan")}, slo)
    assert not meets_slo({}, slo)
    assert not meets_slo({"p99_ttft_ms": 50.0, "failed": 3}, slo)
    assert not meets_slo({"p99_ttft_ms": 50.0, "completed": 0}, slo)


def test_parse_capacity_slo():
    assert parse_capacity_slo("p99_ttft:2000, mean_tpot:50") == {"p99_ttft_ms": 2000.0,
                                                                 "mean_tpot_ms": 50.0}
    assert parse_capacity_slo("median_e2el_ms:9000") == {"median_e2el_ms": 9000.0}
    for bad in ("ttft:200", "p99_ttft", "p99_ttft:abc", "p42_ttft:1", "p99_ttft:-1", ""):
        with pytest.raises(ConfigError):
            parse_capacity_slo(bad)


# ---------------------------------------------------------------- hostile values


@pytest.mark.parametrize("lo, hi, tol", [(0.5, 32, float("nan")), (0.5, 32, float("inf")), (0.5, 32, 0.0),
                                         (0.5, 32, -1.0), (float("nan"), 32, 0.25), (0.5, float("inf"), 0.25),
                                         (float("-inf"), 32, 0.25)])
def test_non_finite_or_non_positive_bracket_and_tol_are_refused(lo, hi, tol):
    with pytest.raises(ValueError):
        find_capacity(knee_latency(5.0), {"p99_ttft_ms": 1000.0}, lo=lo, hi=hi, tol=tol)


# ---------------------------------------------------------------- steady-state probes

from specdec_sim.simulator.sweep.capacity import (MIN_LENGTH_PAIRS, CapacityTask, ProbeSpec,  # noqa: E402
                                                  capacity_summary, capacity_task, length_sample_warning,
                                                  simulator_run_fn, steady_metrics)
from specdec_sim.simulator.sweep.runner import RunSpec  # noqa: E402

SMALL_PROBE = ProbeSpec(requests=80, duration_s=5.0, warmup=0.25)


def test_probe_window_scales_with_rate_and_validates():
    probe = ProbeSpec(requests=100, duration_s=20.0, warmup=0.2)
    assert probe.window_s(1.0) == 100.0 and probe.window_s(50.0) == 20.0
    for bad in (ProbeSpec(requests=5), ProbeSpec(duration_s=float("nan")), ProbeSpec(duration_s=0),
                ProbeSpec(warmup=0.95), ProbeSpec(warmup=float("inf"))):
        with pytest.raises(ConfigError):
            bad.validate()


def test_probe_never_runs_out_of_requests():
    """A trace cut to 40 requests still feeds a probe of max(requests, duration x rate) arrivals."""
    run = simulator_run_fn(RunSpec("sharegpt", policy="none", max_requests=40), SMALL_PROBE)
    for rate, expected in ((2.0, 80), (40.0, 200)):
        m = run(rate)
        assert m["measured_requests"] > 0.5 * expected * (1 - SMALL_PROBE.warmup)
        assert m["completed"] + m["failed"] == m["measured_requests"]


class _FakeResult:
    def __init__(self, frame, summary=None):
        self.requests, self.summary = frame, summary or {}


def test_steady_metrics_discard_the_warm_up_and_count_unfinished_as_failed():
    frame = pd.DataFrame({"arrival_s": [0.0, 1.0, 5.0, 6.0, 7.0],
                          "ttft_ms": [9000.0, 9000.0, 100.0, 200.0, float("nan")],
                          "tpot_ms": [10.0, 10.0, 20.0, 30.0, float("nan")],
                          "e2el_ms": [1.0, 1.0, 1.0, 1.0, float("nan")],
                          "status": ["finished"] * 4 + ["failed"]})
    m = steady_metrics(_FakeResult(frame), warmup_s=5.0)
    assert m["measured_requests"] == 3 and m["completed"] == 2 and m["failed"] == 1
    assert m["mean_ttft_ms"] == 150.0 and m["mean_tpot_ms"] == 25.0  # the 9 s warm-up TTFTs are gone
    assert not meets_slo(m, {"p99_ttft_ms": 1000.0})  # an unfinished measured request fails the probe
    ok = steady_metrics(_FakeResult(frame.iloc[:4]), warmup_s=5.0)
    assert meets_slo(ok, {"p99_ttft_ms": 1000.0}) and not meets_slo(ok, {"p99_ttft_ms": 150.0})


def test_too_short_traces_are_refused_or_warned():
    with pytest.raises(ConfigError, match="at least"):
        length_sample_warning(RunSpec("sharegpt", max_requests=MIN_LENGTH_PAIRS - 1))
    assert "poorly sampled" in length_sample_warning(RunSpec("sharegpt", max_requests=60))
    assert length_sample_warning(RunSpec("sharegpt", max_requests=1000)) == ""
    assert length_sample_warning(RunSpec("synthetic", rate=1.0)) == ""
    row = capacity_task(CapacityTask(RunSpec("sharegpt", max_requests=10), (("p99_ttft_ms", 2000.0),),
                                     probe=SMALL_PROBE))
    assert row["status"] == "error" and "at least" in row["error"]


def test_replicas_scale_the_bracket():
    one = CapacityTask(RunSpec("sharegpt", replicas=1), (("p99_ttft_ms", 2000.0),), lo=0.5, hi=16.0)
    two = CapacityTask(RunSpec("sharegpt", replicas=2), (("p99_ttft_ms", 2000.0),), lo=0.5, hi=16.0)
    assert one.bracket == (0.5, 16.0) and two.bracket == (0.5, 32.0)
    assert two.columns()["rate_hi"] == 32.0


def test_capacity_summary_reports_mean_spread_and_seed_count():
    rows = [{"run_id": str(i), "status": "ok", "trace": "t", "policy": p, "replicas": 1, "seed": s,
             "capacity_rps": c, "search_status": "ok", "evaluations": 7, "wall_s": 1.0 + i,
             "at_capacity_p99_ttft_ms": 1000.0 + i}
            for i, (p, s, c) in enumerate([("a", 0, 10.0), ("a", 1, 12.0), ("a", 2, 14.0), ("b", 0, 5.0)])]
    out = capacity_summary(pd.DataFrame(rows)).set_index("policy")
    assert out.loc["a", "capacity_mean"] == 12.0 and out.loc["a", "capacity_std"] == pytest.approx(2.0)
    assert (out.loc["a", "capacity_min"], out.loc["a", "capacity_max"], out.loc["a", "seeds"]) == (10.0, 14.0, 3)
    assert out.loc["b", "seeds"] == 1 and out.loc["b", "capacity_std"] == 0.0

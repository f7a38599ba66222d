"""Capacity search: bisection on fake monotone latency curves, SLO parsing, and the real simulator."""
from __future__ import annotations

import math

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

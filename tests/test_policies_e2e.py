"""End to end through the engine: adaptive policies track the best fixed k (smartspec-reference.md 4.1, 6.1).

A small version of benchmarks/policy_table.py (its LEGACY setting: the TurboSpec authors' linear fit on the
V0 engine, priced exactly, true lengths known): ShareGPT lengths, Poisson arrivals, mean alpha 0.4,
max_num_seqs 1024; a light rate (2/s, 150 requests) and a heavy one (64/s, 400 requests, past
saturation). Takes about 15-30 s.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "policy_table.py"
_spec = importlib.util.spec_from_file_location("policy_table", _PATH)
policy_table = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("policy_table", policy_table)  # dataclasses look their module up by name
_spec.loader.exec_module(policy_table)

LIGHT, HEAVY = 2.0, 64.0
IMPROVED_TURBOSPEC = "turbospec:counting=position"  # the per-position estimator (docs/policy-variants.md)
ADAPTIVE = ["smartspec", "turbospec", IMPROVED_TURBOSPEC, "goodput-greedy"]
WITHIN = 1.05  # "within a few %" of the best of {none, fixed:1..7}


@pytest.fixture(scope="module")
def results() -> dict:
    out = {}
    for rate, n in ((LIGHT, 150), (HEAVY, 400)):
        workload = policy_table.Workload(acceptance="0.4", max_num_seqs=1024, num_requests=n,
                                         engine_options=policy_table.LEGACY)
        out.update(policy_table.run_grid([rate], policy_table.BASELINES + ADAPTIVE, workload))
    return out


def test_every_run_completes(results):
    assert all(s["completed"] == (150 if rate == LIGHT else 400) for (_, rate), s in results.items())


def test_fixed_k_clearly_worse_than_none_at_heavy_rate(results):
    none = results[("none", HEAVY)]["mean_e2el_ms"]
    for k in range(1, 8):
        assert results[(f"fixed:{k}", HEAVY)]["mean_e2el_ms"] > 1.05 * none, k


def test_speculation_helps_at_light_rate(results):
    assert policy_table.best_baseline(results, LIGHT)[0] != "none"


@pytest.mark.parametrize("policy", ["smartspec", "goodput-greedy", IMPROVED_TURBOSPEC])
def test_adaptive_policy_near_best_fixed_at_light_rate(results, policy):
    assert policy_table.ratio_to_best(results, policy, LIGHT) <= WITHIN


def test_turbospec_as_released_is_no_better_than_the_position_estimator_at_light_rate(results):
    """The V1 estimator (accepted prefix / drafted per step) reads alpha low for k > 1, so it can only pick
    k too short here. Measured ratios to the best fixed k, as released vs counting=position: 1.18 vs 1.00
    with the engine of commit dc07a19, 1.01 vs 1.01 with the issue-11 engine work in progress."""
    released = results[("turbospec", LIGHT)]["mean_e2el_ms"]
    assert released >= 0.99 * results[(IMPROVED_TURBOSPEC, LIGHT)]["mean_e2el_ms"]


@pytest.mark.parametrize("policy", [
    "smartspec", "goodput-greedy",
    pytest.param("turbospec", marks=pytest.mark.xfail(strict=True, reason=(
        "V1's 200-step interval: the first decision is taken at a small batch and held for 200 steps "
        "while the batch ramps to ~400 (measured 1.15-1.25x none on this short run, 1.23-1.30x with "
        "counting=position); not the re-probe: reprobe=verify changes <1 %, interval=20 brings it to "
        "~1.06x"))),
])
def test_adaptive_policy_near_best_fixed_at_heavy_rate(results, policy):
    assert policy_table.ratio_to_best(results, policy, HEAVY) <= WITHIN


def test_goodput_greedy_at_least_as_good_as_smartspec(results):
    for rate in (LIGHT, HEAVY):
        assert results[("goodput-greedy", rate)]["mean_e2el_ms"] <= 1.01 * results[("smartspec", rate)]["mean_e2el_ms"]

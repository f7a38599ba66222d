"""Engine behaviour: invariants, closed-form latencies, acceptance statistics, load-dependent speculation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from specdec_sim.acceptance.draws import accepted_chain
from specdec_sim.acceptance.rates import alpha_from_acceptance_length, PRESETS
from specdec_sim.simulator.config import ConfigError, SimConfig
from specdec_sim.costmodel import CostModel, StepShape, load_calibration
from specdec_sim.acceptance.rates import expected_tokens
from specdec_sim.simulator.engine import run_simulation
from specdec_sim.simulator.recorder import LogHistogram
from specdec_sim.traces import Trace, synthetic_trace


def make_trace(arrivals, prompts, outputs) -> Trace:
    n = len(arrivals)
    return Trace(np.arange(n, dtype=np.int64), np.asarray(arrivals, dtype=np.float64),
                 np.asarray(prompts, dtype=np.int64), np.asarray(outputs, dtype=np.int64), "test")


def check_invariants(trace: Trace, result, config: SimConfig) -> None:
    req = result.requests
    finished = req["status"] == "finished"
    # every request finishes or is reported with a reason
    assert (req.loc[~finished, "reason"].str.len() > 0).all()
    # tokens conserved: a finished request emitted exactly its requested output tokens
    assert (req.loc[finished, "emitted_tokens"] == req.loc[finished, "output_tokens"]).all()
    assert (req.loc[finished, "ttft_ms"] >= 0).all()
    assert (req.loc[finished, "e2el_ms"] >= req.loc[finished, "ttft_ms"] - 1e-9).all()
    steps = result.steps
    if steps is not None and len(steps):
        # KV never over budget
        blocks = config.kv_blocks or load_calibration(config.calibration).memory.num_kv_blocks(config.block_size)
        assert steps["kv_blocks_used"].max() <= blocks
        assert result.summary["peak_kv_utilization"] <= 1.0
        # time never goes backwards, and steps of one replica never overlap
        for _, s in steps.groupby("replica"):
            start = s["start_s"].to_numpy()
            end = start + s["step_time_s"].to_numpy()
            assert np.all(np.diff(start) >= 0)
            assert np.all(start[1:] >= end[:-1] - 1e-9)
        assert steps["emitted"].sum() == req["emitted_tokens"].sum()


def test_lone_request_matches_closed_form_sum_of_step_times():
    prompt, output = 300, 40
    config = SimConfig(acceptance=0.5)
    result = run_simulation(make_trace([1.5], [prompt], [output]), config, "none", seed=3)
    cost = CostModel(load_calibration(config.calibration), drafter=False)  # `none` loads no proposer
    prefill = cost.step_time_s(StepShape(num_prefill=1, prefill_tokens=prompt, prefill_attention_tokens2=prompt * prompt / 2))
    decode = sum(cost.step_time_s(StepShape(num_decode=1, verify_tokens=1, kv_tokens=prompt + i))
                 for i in range(1, output))
    row = result.requests.iloc[0]
    assert row["ttft_ms"] == pytest.approx(prefill * 1000, rel=1e-9)
    assert row["e2el_ms"] == pytest.approx((prefill + decode) * 1000, rel=1e-9)
    assert row["steps"] == output  # one prefill step + output - 1 decode steps


def test_lone_request_with_rejected_drafts_pays_speculation_cost():
    prompt, output, k = 200, 30, 3
    config = SimConfig(acceptance=0.0, acceptance_spread=0, engine="v0")
    result = run_simulation(make_trace([0.0], [prompt], [output]), config, f"fixed:{k}", seed=0)
    cost = CostModel(load_calibration(config.calibration))
    total = cost.step_time_s(StepShape(num_prefill=1, prefill_tokens=prompt, prefill_attention_tokens2=prompt * prompt / 2))
    for i in range(1, output):
        kk = k  # the server knows no end (this calibration states no max_model_len): k is never capped
        total += cost.step_time_s(StepShape(num_decode=1, num_proposing=int(kk > 0), verify_tokens=kk + 1,
                                            kv_tokens=prompt + i, max_k=kk, draft_batch_sizes=(1,) * kk))
    assert result.requests.iloc[0]["e2el_ms"] == pytest.approx(total * 1000, rel=1e-9)
    assert result.summary["num_accepted_tokens"] == 0


@pytest.mark.parametrize("alpha,k", [(0.6, 3), (0.8, 5), (0.3, 2)])
def test_mean_emitted_tokens_per_step_matches_iid_formula(alpha, k):
    trace = make_trace([0, 0, 0, 0], [64] * 4, [3000] * 4)
    result = run_simulation(trace, SimConfig(acceptance=alpha, acceptance_spread=0), f"fixed:{k}", seed=11)
    steps = result.steps
    full = steps[(steps["k_max"] == k) & (steps["k_mean"] == k)]
    per_step = full["emitted"].sum() / full["num_decode"].sum()
    expected = expected_tokens(alpha, k)
    n = full["num_decode"].sum()
    var = sum((j + 1) ** 2 * (alpha ** j) * ((1 - alpha) if j < k else 1) for j in range(k + 1)) - expected ** 2
    assert abs(per_step - expected) < 4 * np.sqrt(var / n)


def test_inversion_draw_has_geometric_distribution():
    rng = np.random.default_rng(0)
    draws = np.array([accepted_chain(0.7, 4, 1.0 - u) for u in rng.random(200_000)])
    for j in range(5):
        expected = 0.7 ** j * (0.3 if j < 4 else 1.0)
        assert np.mean(draws == j) == pytest.approx(expected, abs=0.005)


def test_presets_reproduce_published_acceptance_length():
    mt = PRESETS["mt-bench"]
    assert mt.alpha == pytest.approx(0.717, abs=0.001)  # derived_alpha_iid column of the source CSV
    assert expected_tokens(mt.alpha, 3) == pytest.approx(2.60, abs=1e-6)
    assert alpha_from_acceptance_length(3.53, 7) == pytest.approx(0.743, abs=0.001)


def test_fixed_k_wins_at_low_load_and_loses_near_saturation():
    config = SimConfig(acceptance=0.5, acceptance_spread=0, record_steps=False)
    light = synthetic_trace(1.0, num_requests=150, prompt_tokens=256, output_tokens=256, seed=1)
    heavy = synthetic_trace(80.0, num_requests=1000, prompt_tokens=256, output_tokens=256, seed=1)
    e2e = {(name, spec): run_simulation(tr, config, spec, seed=0).summary["mean_e2el_ms"]
           for name, tr in (("light", light), ("heavy", heavy)) for spec in ("none", "fixed:3")}
    assert e2e[("light", "fixed:3")] < 0.85 * e2e[("light", "none")]
    assert e2e[("heavy", "fixed:3")] > 1.3 * e2e[("heavy", "none")]


def test_small_kv_cache_preempts_and_keeps_every_request():
    trace = synthetic_trace(50.0, num_requests=120, prompt_tokens=200, output_tokens=150, seed=2)
    config = SimConfig(kv_blocks=120, max_num_seqs=64, acceptance=0.7)
    result = run_simulation(trace, config, "fixed:4", seed=5)
    check_invariants(trace, result, config)
    assert result.summary["preemptions"] > 0
    assert result.summary["completed"] == len(trace)
    assert result.requests["preemptions"].sum() == result.summary["preemptions"]


def test_request_larger_than_cache_is_reported_not_lost():
    trace = make_trace([0.0, 0.1], [100, 5000], [10, 10])
    result = run_simulation(trace, SimConfig(kv_blocks=100), "none")
    req = result.requests
    assert list(req["status"]) == ["finished", "failed"]
    assert "KV-cache" in req.loc[1, "reason"]


@pytest.mark.parametrize("router", ["round-robin", "least-tokens", "random"])
def test_routers_spread_load_and_finish_everything(router):
    trace = synthetic_trace(20.0, num_requests=200, prompt_tokens=128, output_tokens=64, seed=4)
    config = SimConfig(replicas=3, router=router)
    result = run_simulation(trace, config, "fixed:2", seed=1)
    check_invariants(trace, result, config)
    counts = result.requests["replica"].value_counts()
    assert len(counts) == 3 and counts.min() > 30
    if router == "round-robin":
        assert counts.max() - counts.min() <= 1


def test_chunked_prefill_mixed_steps():
    trace = synthetic_trace(30.0, num_requests=150, prompt_tokens=3000, output_tokens=64, seed=6)
    for spec_in_prefill in (False, True):
        config = SimConfig(engine="v0", chunked_prefill=True, max_num_batched_tokens=1024,
                           spec_in_prefill_steps=spec_in_prefill)
        result = run_simulation(trace, config, "fixed:3", seed=0)
        check_invariants(trace, result, config)
        mixed = result.steps[(result.steps["num_prefill"] > 0) & (result.steps["num_decode"] > 0)]
        assert len(mixed) > 0
        assert (mixed["proposed"].sum() > 0) == spec_in_prefill
        assert (result.steps["prefill_tokens"] + result.steps["verify_tokens"] <= 1024).all()


def test_same_seed_same_results_other_seed_differs():
    trace = synthetic_trace(10.0, num_requests=100, prompt_tokens=128, output_tokens=100, seed=0)
    a = run_simulation(trace, SimConfig(), "fixed:3", seed=7)
    b = run_simulation(trace, SimConfig(), "fixed:3", seed=7)
    c = run_simulation(trace, SimConfig(), "fixed:3", seed=8)
    assert a.requests.equals(b.requests) and a.steps.equals(b.steps)
    assert not a.requests.equals(c.requests)


def test_slo_goodput_counts_requests_within_every_limit():
    trace = synthetic_trace(40.0, num_requests=200, prompt_tokens=512, output_tokens=64, seed=3)
    config = SimConfig(slo_ms={"ttft": 30.0, "tpot": 15.0}, engine="v0")
    result = run_simulation(trace, config, "none")
    req = result.requests
    good = ((req["ttft_ms"] <= 30) & (req["tpot_ms"].fillna(0) <= 15)).sum()
    assert result.summary["request_goodput"] == pytest.approx(good / result.summary["duration_s"])
    assert 0 < result.summary["slo_attainment"] < 1


def test_max_sim_time_reports_unfinished_requests():
    trace = synthetic_trace(5.0, num_requests=100, prompt_tokens=128, output_tokens=500, seed=0)
    result = run_simulation(trace, SimConfig(max_sim_time_s=5.0), "none")
    failed = result.requests[result.requests["status"] == "failed"]
    assert len(failed) > 0 and (failed["reason"].str.contains("max-sim-time")).all()


def test_per_position_and_batch_modes_match_their_means():
    trace = make_trace([0, 0], [64, 64], [4000, 4000])
    batch = run_simulation(trace, SimConfig(acceptance=0.6, acceptance_spread=0, acceptance_mode="batch"), "fixed:3")
    assert batch.summary["mean_acceptance_length"] == pytest.approx(expected_tokens(0.6, 3), rel=0.05)
    rates = (0.9, 0.5, 0.5)
    pos = run_simulation(trace, SimConfig(acceptance_mode="per-position", position_rates=rates), "fixed:3")
    assert pos.summary["mean_acceptance_length"] == pytest.approx(1 + 0.9 + 0.45 + 0.225, rel=0.05)


def test_ngram_style_only_matched_requests_propose():
    trace = synthetic_trace(5.0, num_requests=60, prompt_tokens=256, output_tokens=200, seed=1)
    result = run_simulation(trace, SimConfig(style="ngram", ngram_match_prob=0.5), "fixed:4")
    steps = result.steps[result.steps["num_decode"] > 0]
    share = (result.summary["num_drafts"]) / steps["num_decode"].sum()
    assert 0.4 < share < 0.6
    assert (steps["draft_s"] <= 0.04 * steps["verify_s"] + 1e-12).all()


def test_bad_config_is_rejected_with_option_name():
    with pytest.raises(ConfigError, match="--replicas"):
        SimConfig(replicas=0).validate()
    with pytest.raises(ConfigError, match="--slo"):
        SimConfig(slo_ms={"latency": 3}).validate()


def test_log_histogram_percentiles_close_to_numpy():
    rng = np.random.default_rng(1)
    values = rng.lognormal(-4, 1, 50_000)
    hist = LogHistogram()
    for v in values:
        hist.add(float(v))
    for p in (50, 90, 99):
        assert hist.percentile(p) == pytest.approx(np.percentile(values, p), rel=0.003)
    assert hist.mean() == pytest.approx(values.mean(), rel=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 25), seed=st.integers(0, 1000), k=st.integers(0, 6), kv_blocks=st.integers(40, 400),
       chunked=st.booleans(), max_seqs=st.integers(1, 16), replicas=st.integers(1, 3))
def test_invariants_hold_on_random_workloads(n, seed, k, kv_blocks, chunked, max_seqs, replicas):
    rng = np.random.default_rng(seed)
    trace = make_trace(np.sort(rng.choice([0.0, 0.5, 1.0, 2.0], n)), rng.integers(1, 600, n), rng.integers(1, 300, n))
    config = SimConfig(kv_blocks=kv_blocks, chunked_prefill=chunked, max_num_seqs=max_seqs, replicas=replicas,
                       max_num_batched_tokens=512 if chunked else 8192, acceptance=float(rng.uniform(0, 0.95)))
    result = run_simulation(trace, config, f"fixed:{k}", seed=seed)
    check_invariants(trace, result, config)
    assert result.summary["completed"] + result.summary["failed"] == n


def test_tree_style_accepts_as_the_tree_model_expects_and_drafts_in_one_pass():
    from specdec_sim.acceptance.tree import expected_accepted_tree

    trace = make_trace([0, 0, 0], [64] * 3, [3000] * 3)
    config = SimConfig(style="tree", acceptance=0.6, acceptance_spread=0)
    result = run_simulation(trace, config, "fixed:4", seed=2)
    check_invariants(trace, result, config)
    steps = result.steps
    full = steps[(steps["num_decode"] > 0) & (steps["k_mean"] == 4)]
    per_step = full["emitted"].sum() / full["num_decode"].sum()
    assert per_step == pytest.approx(1 + expected_accepted_tree(0.6, 4), rel=0.03)
    assert (full["k_max"] == 1).all()  # the tree heads draft every node in one pass

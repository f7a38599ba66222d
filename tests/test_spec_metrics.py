"""vLLM's spec-decode summary keys: the arithmetic of vllm/v1/spec_decode/metrics.py, and what a run writes."""
from __future__ import annotations

import pytest

from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine import run_simulation
from specdec_sim.acceptance.spec_metrics import SPEC_DECODE_KEYS, PositionCounts, merge, spec_decode_summary
from specdec_sim.traces import synthetic_trace


def test_counts_per_position_as_observe_draft_does():
    counts = PositionCounts(max_k=4)
    # four request-steps: k=3 accepting 3, 1, 0, and one without drafts (k=0: not a draft at all)
    counts.add([3, 3, 3, 0], [3, 1, 0, 0])
    assert counts.accepted_per_position(3) == [2, 1, 1]  # position i: drafts that accepted more than i
    assert counts.max_k_seen == 3
    other = PositionCounts(max_k=4)
    other.add([4], [4])
    both = merge([counts, other])
    assert both.accepted_per_position(4) == [3, 2, 2, 1] and both.max_k_seen == 4


def test_derived_keys_closed_form():
    # 12 drafts of 3 tokens, 24 accepted: positions accepted 12, 8, 4 times
    out = spec_decode_summary(12, 36, 24, [12, 8, 4])
    assert out["spec_decode_acceptance_length"] == pytest.approx(1 + 24 / 12)
    assert out["spec_decode_acceptance_rate"] == pytest.approx(24 / 36 * 100)  # percent, as vLLM prints it
    assert out["spec_decode_per_position_acceptance_rates"] == pytest.approx([1.0, 8 / 12, 4 / 12])
    assert (out["spec_decode_num_drafts"], out["spec_decode_draft_tokens"], out["spec_decode_accepted_tokens"]) \
        == (12, 36, 24)
    assert set(out) == set(SPEC_DECODE_KEYS)
    assert spec_decode_summary(0, 0, 0, []) == {}  # no drafts: vllm bench serve writes no spec-decode keys


def test_a_run_writes_keys_consistent_with_its_counters():
    trace = synthetic_trace(4.0, num_requests=40, seed=1)
    config = SimConfig(acceptance="0.7", max_num_batched_tokens=8192)
    spec = run_simulation(trace, config, "fixed:3", seed=2).summary
    assert spec["spec_decode_num_drafts"] == spec["num_drafts"]
    assert spec["spec_decode_draft_tokens"] == spec["num_draft_tokens"]
    assert spec["spec_decode_accepted_tokens"] == spec["num_accepted_tokens"]
    assert spec["spec_decode_acceptance_length"] == pytest.approx(spec["mean_acceptance_length"])
    assert spec["spec_decode_acceptance_rate"] == pytest.approx(100 * spec["draft_acceptance_rate"])
    rates = spec["spec_decode_per_position_acceptance_rates"]
    assert len(rates) == 3 and rates[0] >= rates[1] >= rates[2] > 0  # unconditional: falls with position
    # i.i.d. acceptance 0.7 (spread around it): position i accepted with probability about 0.7^(i+1)
    assert rates[0] == pytest.approx(0.7, abs=0.06)
    assert sum(rates) * spec["spec_decode_num_drafts"] == pytest.approx(spec["spec_decode_accepted_tokens"])
    plain = run_simulation(trace, config, "none", seed=2).summary
    assert not any(key in plain for key in SPEC_DECODE_KEYS)

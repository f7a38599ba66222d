"""Unit tests of the paper policies' decisions (smartspec-reference.md 1.3, 2.1-2.3) with fake requests."""
from __future__ import annotations

import pytest

from specdec_sim.policies import make_policy
from conftest import FakeRequest, fake_batch, fake_outcome
from specdec_sim.policies.base import DecodeBatch
from specdec_sim.policies.goodput import scan_uniform_k, uniform_goodput
from specdec_sim.policies.smartspec import SmartSpec
from specdec_sim.policies.turbospec import TurboSpec
from specdec_sim.costmodel import CostModel, load_calibration

COST = CostModel(load_calibration("turbospec-llama3-8b-eagle-h100"))
NGRAM_COST = CostModel(load_calibration("turbospec-llama3-70b-tp4-ngram-h100"))


def make_batch(size: int, style: str = "draft", max_k: int = 7, cost: CostModel = COST, **kw) -> DecodeBatch:
    return fake_batch([FakeRequest(i) for i in range(size)], cost, max_k, style, **kw)


outcome = fake_outcome


# ---- goodput scan: the reference's [DERIVED] k* table (section 4.3) -------------------------
@pytest.mark.parametrize("size,k_star", [(1, 5), (16, 4), (64, 3), (128, 2), (256, 0)])
def test_goodput_scan_reproduces_k_star_table(size, k_star):
    assert scan_uniform_k(make_batch(size), 0.7, 7) == k_star


@pytest.mark.parametrize("size,k_star", [(1, 5), (16, 4), (64, 3), (128, 2), (256, 0)])
def test_smartspec_fixed_alpha_picks_k_star(size, k_star):
    assert make_policy("smartspec:alpha=0.7").propose(make_batch(size)) == [k_star] * size


def test_expected_tokens_capped_by_budget_left():
    batch = make_batch(4)
    for r in batch.requests:
        r.budget_left = 2  # at most 1 draft token can be used
    assert uniform_goodput(batch, 0.7, 5).tokens == pytest.approx(4 * 1.7)


# ---- SmartSpec alpha: EMA 0.85/0.15 of the lifetime ratio (section 1.3) --------------------
def test_smartspec_ema_of_lifetime_prefix_ratio():
    p = SmartSpec(counting="prefix")
    assert p.estimated_alpha() == 0.7
    p.observe(outcome([4, 4], [2, 4]))  # lifetime 6/8
    assert p.estimated_alpha() == pytest.approx(0.85 * 0.7 + 0.15 * 0.75)
    p.observe(outcome([4, 0], [0, 0]))  # lifetime 6/12
    assert p.estimated_alpha() == pytest.approx(0.85 * (0.85 * 0.7 + 0.15 * 0.75) + 0.15 * 0.5)
    p.observe(outcome([0, 0], [0, 0]))  # nothing drafted: rho is NaN, skipped
    assert p.estimated_alpha() == pytest.approx(0.85 * (0.85 * 0.7 + 0.15 * 0.75) + 0.15 * 0.5)


def test_smartspec_position_counting_uses_rejections():
    p = SmartSpec()  # default: per-position rate, accepted / (accepted + rejections)
    p.observe(outcome([4, 4], [2, 4]))  # 6 accepted, 1 rejection
    assert p.estimated_alpha() == pytest.approx(0.85 * 0.7 + 0.15 * 6 / 7)


def test_smartspec_fixed_alpha_does_not_move():
    p = make_policy("smartspec:alpha=0.6")
    p.observe(outcome([4], [0]))
    assert p.estimated_alpha() == 0.6


# ---- SmartSpec decision interval, bias, stickiness, OOM (section 2.1) ----------------------
def test_smartspec_decides_every_20_steps_and_reuses_k():
    p = SmartSpec(alpha=0.7)
    assert p.propose(make_batch(1))[0] == 5
    for _ in range(19):  # the load changes, but k is reused until the next decision
        assert p.propose(make_batch(128))[0] == 5
    assert p.decisions == 1
    assert p.propose(make_batch(128))[0] == 2
    assert p.decisions == 2


def test_bias_makes_smartspec_choose_zero_where_turbospec_chooses_one():
    batch = make_batch(64)
    g = [uniform_goodput(batch, 0.45, k).value for k in range(3)]
    assert g[0] < g[1] < 1.1 * g[0] and g[2] < g[1]  # k=1 wins, but by less than 10 %
    assert SmartSpec(alpha=0.45).propose(batch)[0] == 0
    assert TurboSpec(initial_alpha=0.45).propose(batch)[0] == 1
    assert SmartSpec(alpha=0.45, bias=1.0).propose(batch)[0] == 1


def test_smartspec_sticky_zero_for_100_steps_then_reset():  # the pre-issue-11 variant; as released: test_policies_faithful
    p = SmartSpec(alpha=0.7, sticky="redecide")
    assert p.propose(make_batch(256))[0] == 0  # decision k=0 at running size 256
    assert p.threshold == 256
    for _ in range(100):  # disabled: k = 0 without evaluating, even when a decision was due
        assert p.propose(make_batch(256))[0] == 0
    assert p.decisions == 1
    assert p.propose(make_batch(128))[0] == 2  # threshold reset to infinity: fresh decision
    assert p.decisions == 2


def test_smartspec_sticky_zero_clears_when_load_drops():  # sticky=redecide only
    p = SmartSpec(alpha=0.7, sticky="redecide")
    assert p.propose(make_batch(256))[0] == 0
    assert p.propose(make_batch(300))[0] == 0  # at or above the threshold: disabled
    assert p.decisions == 1
    assert p.propose(make_batch(128))[0] == 2  # below: cleared at once, re-decided
    assert p.threshold == float("inf")


def test_smartspec_oom_guard_stops_the_scan():
    batch = make_batch(16, free_kv_tokens=800)  # 1.1*(8192 + 16*(k+1)) > 8192 + 800 for k >= 0? no: k=0 fits
    assert 1.1 * (8192 + 16) > 8192 + 800  # even k = 0 trips the guard: sentinel, best_k stays 0
    assert SmartSpec(alpha=0.7).propose(batch)[0] == 0
    roomy = make_batch(16, free_kv_tokens=8192)
    assert SmartSpec(alpha=0.7).propose(roomy)[0] == 4


def test_smartspec_ngram_verifies_matched_requests_only():
    batch = make_batch(64, style="ngram", cost=NGRAM_COST)
    for r in batch.requests[:32]:
        r.ngram_match = False
    k = SmartSpec(alpha=0.7).propose(batch)
    assert len(set(k)) == 1 and k[0] > 0  # the engine zeroes unmatched requests
    none_matched = make_batch(64, style="ngram", cost=NGRAM_COST)
    for r in none_matched.requests:
        r.ngram_match = False
    assert SmartSpec(alpha=0.7).propose(none_matched)[0] == 0  # n_match = 0: verify 0


def test_smartspec_ngram_40_zero_rule_and_clear_after_100():  # ngram=as-draft; as released: test_policies_faithful
    p = SmartSpec(alpha=0.05, ngram="as-draft")  # speculation never pays: every decision is v = 0
    batch = make_batch(64, style="ngram", cost=NGRAM_COST)
    for _ in range(40):
        assert p.propose(batch)[0] == 0
    assert p.decisions == 2  # steps 0 and 20
    for _ in range(60):  # zeros 41..100: no evaluation
        assert p.propose(batch)[0] == 0
    assert p.decisions == 2
    p.propose(batch)  # history cleared after 100 zeros: re-probe with a decision
    assert p.decisions == 3


# ---- TurboSpec: window of 100, 200-step decisions, re-probe at max k (section 2.3) ----------
def test_turbospec_window_mean_of_last_100_steps():
    p = TurboSpec(counting="prefix")  # V1's literal rho_step = sum accepted / sum drafted
    assert p.estimated_alpha() == 0.5
    p.observe(outcome([0, 0], [0, 0]))  # no drafts: no sample
    assert p.estimated_alpha() == 0.5
    for i in range(150):
        p.observe(outcome([4, 4], [i % 5, 0]))  # rho_step = (i % 5) / 8
    expected = sum((i % 5) / 8 for i in range(50, 150)) / 100
    assert p.estimated_alpha() == pytest.approx(expected)


def test_turbospec_position_counting_variant():
    p = TurboSpec(counting="position")
    p.observe(outcome([4, 4], [2, 4]))  # 6 accepted, 1 unobserved position (after the rejection)
    first = (6 + 1 * 0.5) / 8  # imputed at the initial 0.5
    assert p.estimated_alpha() == pytest.approx(first)
    p.observe(outcome([4, 4], [0, 0]))  # 0 accepted, 3 + 3 unobserved
    assert p.estimated_alpha() == pytest.approx((first + 6 * first / 8) / 2)


def test_turbospec_decides_every_200_steps_with_max_k_reprobe():  # reprobe=verify variant
    p = TurboSpec(initial_alpha=0.7, reprobe="verify")
    ks = [p.propose(make_batch(64))[0] for _ in range(400)]
    assert ks[0] == 3 and set(ks[1:199]) == {3}
    assert ks[199] == 7 and ks[399] == 7  # (t+1) % 200 == 0: full-length drafts
    assert ks[200] == 3 and p.decisions == 2


def test_turbospec_prices_prefill_in_mixed_batches():
    plain = TurboSpec(initial_alpha=0.7).propose(make_batch(64))[0]
    mixed = TurboSpec(initial_alpha=0.7).propose(make_batch(64, prefill_tokens=4096, num_prefill=2))[0]
    assert mixed > plain  # a long prefill chunk dominates the step, so extra draft tokens are cheap


def test_turbospec_per_request_proportional_split():
    p = TurboSpec(initial_alpha=0.7, per_request=True)
    p.observe(outcome([4, 4, 4, 4], [4, 4, 0, 0]))  # requests 0,1 accept everything, 2,3 nothing
    batch = make_batch(4)
    ks = p.propose(batch)  # v* by the windowed global alpha, split by each request's own acceptance
    v = p.verify_len
    assert ks == [min(7, round(v * 4 * 1.0 / 2.0))] * 2 + [0, 0]


# ---- vLLM baselines -------------------------------------------------------------------------
def test_vllm_disable_by_batch_size():
    p = make_policy("vllm-disable:k=4,threshold=32")
    assert p.propose(make_batch(31)) == [4] * 31
    assert p.propose(make_batch(32)) == [0] * 32


def test_vllm_table_inline_and_json(tmp_path):
    p = make_policy("vllm-table:table=1-4:5;5-16:3;17-1024:0")
    assert [p.propose(make_batch(b))[0] for b in (1, 4, 5, 16, 17, 300)] == [5, 5, 3, 3, 0, 0]
    path = tmp_path / "t.json"
    path.write_text("[[1, 8, 6], [9, 64, 2]]")
    q = make_policy(f"vllm-table:table={path}")
    assert [q.propose(make_batch(b, max_k=5))[0] for b in (1, 9, 65)] == [5, 2, 0]  # capped, uncovered -> 0

"""The author-named policies are the authors' algorithms as released, by default (issue 11).

Expected values are worked out by hand from the formulas and the bookkeeping of
docs/smartspec-reference.md (sections 1.3, 2.1, 2.2, 2.3) and the code it cites
([C-DSD] dsd.py, [C-SDW] spec_decode_worker.py at `dsd` head b427a1380; [C-AT] auto_tuner.py).
The pre-issue-11 behaviour stays reachable as options (docs/policy-variants.md); a few tests run
both to show where they part.
"""
from __future__ import annotations

import math

import pytest

from conftest import FakeRequest, assert_one_line_error, fake_batch, fake_outcome
from specdec_sim.costmodel import CostModel, load_calibration, step_shape
from specdec_sim.policies import PolicySpecError, make_policy
from specdec_sim.acceptance.rates import expected_tokens
from specdec_sim.policies.smartspec import SmartSpec
from specdec_sim.policies.turbospec import TurboSpec

COST = CostModel(load_calibration("turbospec-llama3-8b-eagle-h100"))
NGRAM_COST = CostModel(load_calibration("turbospec-llama3-70b-tp4-ngram-h100"))


def batch_of(size: int, style: str = "draft", matched: int | None = None, cost: CostModel = COST):
    """`size` requests at context 512; with `matched`, only the first `matched` found an n-gram match."""
    reqs = [FakeRequest(i, ngram_match=matched is None or i < matched) for i in range(size)]
    return fake_batch(reqs, cost, 7, style)


def ngram_batch(size: int, matched: int | None = None):
    return batch_of(size, "ngram", matched, NGRAM_COST)


# ---- defaults and options through --policy ---------------------------------------------------
def test_defaults_are_as_released():
    s, t = make_policy("smartspec"), make_policy("turbospec")
    assert (s.sticky, s.ngram, s.lookup_ms, s.bias, s.interval, s.sticky_steps) == ("released", "released", 1.2,
                                                                                     1.1, 20, 100)
    assert (t.counting, t.reprobe, t.interval, t.window, t.initial_alpha) == ("prefix", "truncate", 200, 100, 0.5)


def test_variants_are_named_options():
    s = make_policy("smartspec:sticky=redecide,ngram=as-draft,lookup_ms=0")
    assert (s.sticky, s.ngram, s.lookup_ms) == ("redecide", "as-draft", 0.0)
    t = make_policy("turbospec:counting=position,reprobe=verify")
    assert (t.counting, t.reprobe) == ("position", "verify")
    assert make_policy("turbospec:reprobe=0").reprobe == "truncate"  # the old boolean spelling
    assert make_policy("turbospec:reprobe=1").reprobe == "verify"


@pytest.mark.parametrize("spec,part", [("smartspec:sticky=sometimes", "sticky"), ("smartspec:ngram=v2", "ngram"),
                                       ("smartspec:lookup_ms=-1", "lookup_ms"),
                                       ("turbospec:reprobe=maybe", "reprobe")])
def test_bad_variant_names_are_one_line_errors(spec, part):
    with pytest.raises(PolicySpecError) as exc:
        make_policy(spec)
    assert_one_line_error(exc, spec, part)


# ---- TurboSpec estimator (section 1.3, V1): mean of the last 100 step ratios accepted/drafted ----
def test_turbospec_alpha_is_window_mean_of_prefix_ratios():
    p = TurboSpec()
    assert p.estimated_alpha() == 0.5  # start_acceptance_rate before any history
    steps = [([4, 4], [2, 4]),  # rho = 6/8
             ([4, 0], [1, 0]),  # only request 0 drafted: 1/4
             ([0, 0], [0, 0]),  # nobody drafted: no sample
             ([3, 3, 3], [3, 0, 1])]  # 4/9
    for proposed, accepted in steps:
        p.observe(fake_outcome(proposed, accepted))
    assert p.estimated_alpha() == pytest.approx((6 / 8 + 1 / 4 + 4 / 9) / 3)


def test_turbospec_window_forgets_old_steps():
    p = TurboSpec(window=2)
    for proposed, accepted in (([4], [4]), ([4], [1]), ([4], [3])):
        p.observe(fake_outcome(proposed, accepted))
    assert p.estimated_alpha() == pytest.approx((1 / 4 + 3 / 4) / 2)


def test_turbospec_prefix_ratio_is_lower_than_position_variant():
    """Under i.i.d. acceptance the accepted prefix over k drafts understates alpha (section 1.3's pitfall)."""
    released, improved = TurboSpec(), TurboSpec(counting="position")
    for out in (fake_outcome([4, 4], [2, 4]), fake_outcome([4, 4], [0, 1])):
        released.observe(out)
        improved.observe(out)
    assert released.estimated_alpha() == pytest.approx((6 / 8 + 1 / 8) / 2)
    assert improved.estimated_alpha() > released.estimated_alpha()


def test_turbospec_locks_at_zero_once_the_estimate_collapses():
    """As released: v = 0 drafts nothing, so the window gets no sample and every later decision is 0 again."""
    p = TurboSpec()
    p.observe(fake_outcome([7] * 64, [0] * 64))  # rho_step = 0: alpha = 0
    ks = [p.propose(batch_of(64))[0] for _ in range(401)]
    for k in ks:
        p.observe(fake_outcome([k] * 64, [0] * 64))
    assert set(ks) == {0} and p.decisions == 3 and p.estimated_alpha() == 0.0


# ---- TurboSpec cadence (section 2.3) ------------------------------------------------------------
def test_turbospec_decides_every_200_steps_and_verifies_only_v():
    """k* from the reference's [DERIVED] table (ctx 512): alpha 0.7, B 64 -> 3; alpha 0.9, B 64 -> 7.
    The re-probe's full-length drafts are truncated to v at the decision step, so no step verifies k_max."""
    p = TurboSpec(initial_alpha=0.7)
    ks = [p.propose(batch_of(64))[0]]
    for _ in range(199):
        p.observe(fake_outcome([10], [9]))  # rho_step = 0.9: alpha moves, k waits for the next decision
        ks.append(p.propose(batch_of(64))[0])
    assert set(ks) == {3} and p.decisions == 1 and p.estimated_alpha() == pytest.approx(0.9)
    assert p.propose(batch_of(64))[0] == 7 and p.decisions == 2  # t = 200


def test_turbospec_reprobe_verify_variant_verifies_k_max_before_each_decision():
    p = TurboSpec(initial_alpha=0.7, reprobe="verify")
    ks = [p.propose(batch_of(64))[0] for _ in range(201)]
    assert ks[198] == 3 and ks[199] == 7 and ks[200] == 3


def test_turbospec_skips_a_decision_when_no_request_drafts():
    """V1 set_verify_len returns early when no spec tokens are scheduled (n-gram lookups without a match)."""
    p = TurboSpec(initial_alpha=0.7)
    assert p.propose(ngram_batch(64, matched=0))[0] == 0 and p.decisions == 0
    for _ in range(199):
        p.propose(ngram_batch(64))
    assert p.decisions == 0 and p.verify_len == 0
    assert p.propose(ngram_batch(64))[0] > 0 and p.decisions == 1  # t = 200, matches: decide


# ---- SmartSpec sticky k = 0 as released (section 2.1, [C-SDW]) ----------------------------------
def smartspec() -> SmartSpec:
    return SmartSpec(alpha=0.7)  # k* at ctx 512: B 128 -> 2, B 256 -> 0 (the [DERIVED] table; bias does not change it)


def test_load_drop_keeps_the_cached_zero_and_rearms_the_threshold():
    p = smartspec()
    assert p.propose(batch_of(256))[0] == 0  # DSD step 0: decision k = 0, threshold = 256
    assert (p.threshold, p.disabled_steps, p.dsd_steps) == (256, 0, 1)
    assert p.propose(batch_of(256))[0] == 0  # 256 >= 256: disabled, no DSD evaluation
    assert (p.disabled_steps, p.dsd_steps) == (1, 1)
    assert p.propose(batch_of(128))[0] == 0  # below: the DSD path, which returns the cached 0 ...
    assert (p.threshold, p.disabled_steps, p.dsd_steps, p.decisions) == (128, 1, 2, 1)  # ... and re-arms at 128
    assert p.propose(batch_of(128))[0] == 0  # disabled again; the count goes on across re-arms
    assert p.disabled_steps == 2
    old = SmartSpec(alpha=0.7, sticky="redecide")
    assert [old.propose(batch_of(b))[0] for b in (256, 256, 128)] == [0, 0, 2]  # the pre-issue-11 variant


def test_a_drop_right_after_arming_resets_then_rearms():
    """disabled_steps % 100 == 0 holds while it is 0, so the threshold resets; the cached 0 re-arms it."""
    p = smartspec()
    p.propose(batch_of(256))
    assert p.propose(batch_of(200))[0] == 0
    assert (p.threshold, p.disabled_steps, p.dsd_steps, p.decisions) == (200, 0, 2, 1)


def test_hundred_disabled_steps_reset_the_threshold_but_not_the_cached_zero():
    p = smartspec()
    p.propose(batch_of(256))
    for _ in range(99):
        assert p.propose(batch_of(256))[0] == 0
    assert (p.disabled_steps, p.dsd_steps) == (99, 1)
    assert p.propose(batch_of(256))[0] == 0  # 100th: reset to inf, so the DSD path runs: cached 0, re-armed
    assert (p.threshold, p.disabled_steps, p.dsd_steps, p.decisions) == (256, 0, 2, 1)
    assert p.propose(batch_of(256))[0] == 0 and p.disabled_steps == 1


def test_a_fresh_decision_waits_for_the_interval_of_dsd_steps():
    p = smartspec()
    assert p.propose(batch_of(256))[0] == 0  # DSD step 0
    assert p.propose(batch_of(256))[0] == 0  # disabled: disabled_steps = 1, the DSD counter stays
    for size in range(147, 128, -1):  # 19 DSD-path steps, each below the last threshold
        assert p.propose(batch_of(size))[0] == 0
        assert p.threshold == size
    assert (p.dsd_steps, p.decisions, p.disabled_steps) == (20, 1, 1)
    assert p.propose(batch_of(128))[0] == 2  # DSD step 20: decision at B = 128
    assert p.decisions == 2 and p.threshold == 129  # a k > 0 decision does not disarm the threshold ...
    assert p.propose(batch_of(129))[0] == 0  # ... so a step back at 129 is disabled, as in [C-SDW]
    assert p.propose(batch_of(128))[0] == 2  # below it: the cached 2


def test_k_above_zero_after_a_reset_runs_freely():
    p = smartspec()
    p.propose(batch_of(256))
    for size in range(147, 128, -1):  # disabled_steps stays 0, so every step resets and re-arms
        p.propose(batch_of(size))
    assert p.propose(batch_of(128))[0] == 2 and p.threshold == math.inf
    assert [p.propose(batch_of(b))[0] for b in (256, 512, 128)] == [2, 2, 2]  # cached until DSD step 40


# ---- SmartSpec alpha: every step of the speculative path moves the EMA (section 1.3) --------------
def test_ngram_step_that_verifies_nothing_still_moves_alpha():
    p = SmartSpec(counting="prefix")
    assert p.propose(ngram_batch(2))[0] > 0  # decision at 0.7
    p.observe(fake_outcome([4, 4], [2, 4]))  # lifetime 6/8
    a1 = 0.85 * 0.7 + 0.15 * 0.75
    assert p.estimated_alpha() == pytest.approx(a1)
    p.propose(ngram_batch(2, matched=0))  # speculative path (proposed 8), no match: nothing drafted
    p.observe(fake_outcome([0, 0], [0, 0]))
    assert p.estimated_alpha() == pytest.approx(0.85 * a1 + 0.15 * 0.75)  # V0 updates with the lifetime ratio


def test_draft_path_zero_step_leaves_alpha():
    p = SmartSpec(counting="prefix")
    p.observe(fake_outcome([4, 4], [2, 4]))
    before = p.estimated_alpha()
    assert p.propose(batch_of(1024))[0] == 0  # k = 0 runs _run_no_spec: no update
    p.observe(fake_outcome([0], [0]))
    assert p.estimated_alpha() == before


# ---- SmartSpec prompt lookup as released (section 2.2) ----------------------------------------------
def v0_ngram_goodput(alpha: float, size: int, matched: int, v: int) -> float:
    """gen = l(alpha, v)*n_match + (B - n_match) over T(v); T(0) is a plain decode plus V0's 0.0012 s lookup."""
    ks = [v] * matched + [0] * (size - matched)
    time_s = NGRAM_COST.step_time_s(step_shape(ks, size * 512)) + (0.0012 if v == 0 else 0.0)
    return (expected_tokens(alpha, v) * matched + size - matched) / time_s


def hand_scan(values: list[float]) -> int:
    best, best_gp = 0, -1.0
    for v, gp in enumerate(values):
        if gp <= best_gp:
            break
        best, best_gp = v, gp
    return best


def test_ngram_decision_has_no_bias_and_pays_the_lookup_at_zero():
    g = [v0_ngram_goodput(0.5, 64, 32, v) for v in range(8)]
    assert hand_scan(g) == 2 and g[1] < g[2] > g[3]
    assert SmartSpec(alpha=0.5).propose(ngram_batch(64, matched=32)) == [2] * 64
    plain0 = 64 / NGRAM_COST.step_time_s(step_shape([0] * 64, 64 * 512))
    assert 1.1 * plain0 > g[1]  # with the draft path's bias v = 0 would win: the pre-issue-11 variant
    assert SmartSpec(alpha=0.5, ngram="as-draft").propose(ngram_batch(64, matched=32))[0] == 0


def test_ngram_lookup_cost_alone_decides_a_close_call():
    g = [v0_ngram_goodput(0.25, 64, 32, v) for v in range(8)]
    plain0 = 64 / NGRAM_COST.step_time_s(step_shape([0] * 64, 64 * 512))
    assert g[0] < g[1] < plain0  # the 1.2 ms lookup makes v = 1 worth it; priced as a plain decode it is not
    assert hand_scan(g) == 1 and SmartSpec(alpha=0.25).propose(ngram_batch(64, matched=32))[0] == 1
    assert SmartSpec(alpha=0.25, lookup_ms=0).propose(ngram_batch(64, matched=32))[0] == 0


def test_ngram_decision_without_matches_verifies_zero_and_keeps_the_cache():
    p = SmartSpec(alpha=0.5)
    assert p.propose(ngram_batch(64, matched=0))[0] == 0  # decision due, n_match = 0: verify 0, record nothing
    assert (p.decisions, p.history.length, p.last_k) == (0, 0, 0)
    for _ in range(19):  # DSD steps 1..19 reuse (and record) the cached v
        p.propose(ngram_batch(64, matched=32))
    assert p.decisions == 0 and p.history.length == 19
    assert p.propose(ngram_batch(64, matched=32))[0] == 2 and p.decisions == 1  # DSD step 20


def test_ngram_zero_history_stops_proposing_and_arms_the_queue_threshold():
    p = SmartSpec(alpha=0.05)  # speculation never pays: every decision is v = 0
    for _ in range(41):  # steps 0..40 record 41 zeros (decisions at DSD steps 0, 20, 40)
        assert p.propose(ngram_batch(64))[0] == 0
    assert (p.decisions, p.history.length, p.threshold) == (3, 41, math.inf)
    assert p.propose(ngram_batch(64))[0] == 0  # len 41 > 40, last 40 zero: propose 0, record it, arm 64
    assert (p.history.length, p.threshold, p.dsd_steps) == (42, 64, 41)
    for _ in range(99):  # disabled by the queue threshold: no DSD path, nothing recorded
        p.propose(ngram_batch(64))
    assert (p.history.length, p.disabled_steps, p.dsd_steps) == (42, 99, 41)
    p.propose(ngram_batch(64))  # 100th disabled step resets the threshold: propose 0 again, re-armed
    assert (p.history.length, p.threshold, p.disabled_steps) == (43, 64, 0)
    assert p.decisions == 3


def test_ngram_history_clears_after_more_than_100_zeros():
    p = SmartSpec(alpha=0.05)
    size = 300
    for _ in range(42):  # 41 recorded zeros from the DSD path, then the first propose-0
        p.propose(ngram_batch(size))
    while p.history.length:  # a falling load never meets the threshold: one propose-0 recorded per step
        size -= 1
        p.propose(ngram_batch(size))
    assert size == 300 - 59  # the 101st zero cleared the history in the same step
    dsd = p.dsd_steps
    assert p.propose(ngram_batch(size - 1))[0] == 0 and p.dsd_steps == dsd + 1  # proposing again: the DSD path
    assert p.history.length == 1


def test_ngram_as_draft_variant_ignores_the_queue_threshold():
    p = SmartSpec(alpha=0.05, ngram="as-draft")
    for _ in range(60):
        p.propose(ngram_batch(64))
    assert p.threshold == math.inf

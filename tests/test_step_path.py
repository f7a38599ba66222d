"""The per-step fast paths of the engine equal the general forms they shortcut.

The engine's step loop takes shortcuts for its most frequent cases (no drafts, one k for every
request, the usual step where every decoding request last emitted at the same time). Each test
here builds the general answer independently and checks the shortcut gives exactly the same
(the golden digests check the same on whole runs).
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdec_sim.costmodel import PrefillTerms
from specdec_sim.costmodel.model import level_counts_of, shape_from_levels, step_shape
from specdec_sim.policies.base import FixedK
from specdec_sim.acceptance.draws import AcceptanceDrawer
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine import run_simulation
from specdec_sim.simulator.kvcache import KVCache
from specdec_sim.simulator.request import Request
from specdec_sim.simulator.scheduler import Scheduler, StepResult
from specdec_sim.acceptance.spec_metrics import PositionCounts
from specdec_sim.traces import synthetic_trace

KS = st.lists(st.integers(0, 8), max_size=12)


@settings(max_examples=200, deadline=None)
@given(KS, st.integers(0, 10**6), st.integers(0, 4096), st.integers(0, 3), st.booleans())
def test_step_shape_equals_the_shape_built_from_its_draft_levels(ks, kv, prefill_tokens, chunks, tree):
    prefill = PrefillTerms(prefill_tokens, chunks, 7 * chunks, prefill_tokens * 1.5)
    general = shape_from_levels(len(ks), level_counts_of(ks), kv, prefill, tree)
    assert step_shape(ks, kv, prefill, tree) == general


def test_uniform_and_draft_free_shapes_closed_form():
    shape = step_shape([3] * 5, 1000)
    assert (shape.num_decode, shape.num_proposing, shape.verify_tokens, shape.max_k) == (5, 5, 20, 3)
    assert shape.draft_batch_sizes == (5, 5, 5)
    plain = step_shape([0] * 4, 800, PrefillTerms(100, 1, 0, 5000.0))
    assert (plain.verify_tokens, plain.max_k, plain.draft_batch_sizes, plain.num_seqs) == (4, 0, (), 5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 8), st.integers(0, 3)), max_size=20),
       st.sampled_from([1, 16, 32]))
def test_lookahead_growth_is_the_blocks_missing_for_context_plus_k_plus_one(rows, block_size):
    kv = KVCache(10**6, block_size)
    reqs, ks, expected = [], [], []
    for i, (context, k, slack) in enumerate(rows):
        req = Request(i, i, 10, 10, 0.5)
        req.context_tokens = context
        req.blocks = max(0, math.ceil(context / block_size) - slack)  # may already hold too few blocks
        reqs.append(req)
        ks.append(k)
        extra = math.ceil((context + k + 1) / block_size) - req.blocks
        if extra > 0:
            expected.append((req, extra))
    growing, total = kv.lookahead_growth(reqs, ks)
    assert growing == expected and total == sum(e for _, e in expected)
    free = kv.free
    kv.grow_many(growing, total)
    assert kv.free == free - total
    assert all(r.blocks * block_size >= r.context_tokens + k + 1 for r, k in zip(reqs, ks))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=8), max_size=40))
def test_position_counts_with_bulk_binning_equal_one_count_per_draft(steps):
    counts = PositionCounts(max_k=6)
    counts._FLUSH_AT = 7  # flush often: the buffer is emptied into the histogram many times
    naive = [0] * 7
    for step in steps:
        ks = [k for k, _ in step]
        accepted = [min(a, k) for k, a in step]
        counts.add(ks, accepted)
        for k, a in zip(ks, accepted):
            if k:
                naive[a] += 1
    assert counts.hist == naive
    assert counts.hist == naive  # reading twice changes nothing
    assert counts.max_k_seen == max((k for step in steps for k, _ in step), default=0)


def test_position_counts_flush_at_the_threshold():
    counts = PositionCounts(max_k=3)
    for _ in range(counts._FLUSH_AT // 4 + 1):  # one step past the buffer's size
        counts.add([3, 3, 3, 3], [0, 1, 2, 3])
    assert len(counts._unsorted) < counts._FLUSH_AT
    n = counts._FLUSH_AT // 4 + 1
    assert counts.hist == [n, n, n, n] and counts.accepted_per_position(3) == [3 * n, 2 * n, n]


def requests_with_alphas(alphas) -> list[Request]:
    return [Request(i, i, 10, 100, a) for i, a in enumerate(alphas)]


@pytest.mark.parametrize("alphas", [[0.3, 0.7, 0.9, 0.999999], [0.0, 0.6, 0.0, 0.8]])
def test_uniform_k_draws_are_the_inversion_of_one_uniform_per_drafting_request(alphas):
    reqs = requests_with_alphas(alphas)
    drawer = AcceptanceDrawer("independent", "draft", random.Random(11))
    reference = random.Random(11)
    for k in (1, 3, 5):
        got = drawer.draw(reqs, [k] * len(reqs))
        want = []
        for r in reqs:  # a request that cannot accept (alpha 0) draws no number
            want.append(min(k, int(math.log(1.0 - reference.random()) / math.log(r.alpha))) if r.alpha > 0 else 0)
        assert got == want
    mixed = drawer.draw(reqs, [2, 0, 4, 1])
    want = [min(k, int(math.log(1.0 - reference.random()) / math.log(r.alpha))) if k and r.alpha > 0 else 0
            for r, k in zip(reqs, [2, 0, 4, 1])]
    assert mixed == want


def test_a_step_without_drafts_draws_no_number_except_in_batch_mode():
    reqs = requests_with_alphas([0.5, 0.6, 0.7])
    for mode, used in (("independent", 0), ("per-position", 0), ("batch", 1)):
        rng = random.Random(5)
        drawer = AcceptanceDrawer(mode, "draft", rng, position_rates=(0.5,))
        assert drawer.draw(reqs, [0, 0, 0]) == [0, 0, 0]
        assert drawer.draw([], []) == []
        reference = random.Random(5)
        for _ in range(used * 2):  # batch mode draws its one shared uniform in each of the two steps
            reference.random()
        assert rng.random() == reference.random(), mode
        assert drawer.positions.hist == [0] * 65  # no draft was counted


def decoding_requests(lasts, tokens_left) -> list[Request]:
    reqs = []
    for i, (last, left) in enumerate(zip(lasts, tokens_left)):
        req = Request(i, i, 10, left, 0.5)
        req.is_decoding, req.last_token_s, req.context_tokens, req.blocks = True, last, 10, 1
        reqs.append(req)
    return reqs


def test_emitting_groups_itl_gaps_by_last_emission_in_first_seen_order():
    kv = KVCache(1000, 16)
    sched = Scheduler(kv, 64, 8192, True, True, 7)
    reqs = decoding_requests([1.0, 0.5, 1.0, 0.25, 0.5], [50, 50, 2, 50, 3])
    sched.running = list(reqs)
    result = StepResult()
    sched._emit_decodes(reqs, [3, 0, 3, 1, 2], 2.0, result, True)
    assert result.itl_gaps == [(1.0, 2), (1.5, 2), (1.75, 1)]  # first the first request's group
    # two tokens left, four offered: the output ends inside the drafts; three left, three offered: it ends too
    assert result.finished == [reqs[2], reqs[4]]
    assert result.emitted == 4 + 1 + 2 + 2 + 3 and result.accepted == 9
    assert [r.generated for r in reqs] == [4, 1, 2, 2, 3] and all(r.last_token_s == 2.0 for r in reqs)
    assert [r.budget_left for r in reqs] == [46, 49, 0, 48, 0]


def test_the_plan_carries_the_context_of_the_requests_it_runs():
    kv = KVCache(6, 16)
    sched = Scheduler(kv, 64, 8192, True, True, 7)
    reqs = decoding_requests([1.0] * 3, [50] * 3)
    for req, context in zip(reqs, (16, 31, 47)):
        req.context_tokens, req.blocks = context, 0
        kv.grow(req, -(-context // 16))
    sched.running = list(reqs)
    seen = []

    def propose(decoding, kv_tokens, prefill_tokens, num_prefill):
        seen.append(kv_tokens)
        return [3] * len(decoding)

    plan = sched.plan(propose)
    assert seen == [16 + 31 + 47]
    # six blocks hold 94 tokens; 3 + 4 lookahead each does not fit: the newest request is preempted
    assert plan.preemptions == 1 and plan.decoding == reqs[:2] and plan.kv_tokens == 16 + 31


class CountingFixed(FixedK):
    observes = True  # FixedK itself declares False
    observed = 0

    def observe(self, outcome) -> None:
        CountingFixed.observed += 1


class QuietFixed(CountingFixed):
    observes = False


@pytest.mark.parametrize("policy, calls", [(CountingFixed, True), (QuietFixed, False)])
def test_observe_is_skipped_only_for_a_policy_that_declares_it_ignores_outcomes(policy, calls):
    CountingFixed.observed = 0
    trace = synthetic_trace(4.0, num_requests=20, seed=1)
    result = run_simulation(trace, SimConfig(acceptance="0.7"), policy(k=2), seed=3)
    assert (CountingFixed.observed > 0) is calls
    assert (result.requests["status"] == "finished").all()
    steps = result.steps
    assert np.isfinite(steps["step_time_s"]).all()

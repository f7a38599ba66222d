"""Tests of goodput-greedy, the oracle, the tree model, the table builder and spec parsing
(smartspec-reference.md 6.2 items 1-2, 3, 6.1 iv)."""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings, strategies as st

from specdec_sim.policies import PolicySpecError, make_policy
from conftest import FakeRequest, fake_batch, python_calls
from specdec_sim.policies.base import DecodeBatch, StepOutcome
from specdec_sim.policies.build_table import build_k_table, main as build_table_main
from specdec_sim.policies.goodput import batch_shape, best_uniform_k, goodput_of_ks, scan_uniform_k, step_tokens
from specdec_sim.policies.greedy import GoodputGreedy, allocate_greedy
from specdec_sim.acceptance.tree import expected_accepted_tree, sample_accepted_tree
from specdec_sim.costmodel import CostModel, load_calibration, uniform_shape
from specdec_sim.acceptance.rates import expected_tokens

COST = CostModel(load_calibration("turbospec-llama3-8b-eagle-h100"))


Req = FakeRequest


def make_batch(alphas, style: str = "draft", max_k: int = 7) -> DecodeBatch:
    return fake_batch([Req(i, a) for i, a in enumerate(alphas)], COST, max_k, style)


# ---- greedy allocation ----------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 16, 64, 128])
def test_greedy_matches_uniform_optimum_when_alphas_equal(size):
    batch = make_batch([0.7] * size)
    alloc = allocate_greedy(batch, [0.7] * size, 7)
    k_star = best_uniform_k(COST, 0.7, size, 512, 7)
    assert alloc.ks == [k_star] * size
    assert alloc.goodput == pytest.approx(goodput_of_ks(batch, [k_star] * size, 0.7).value)


def test_greedy_gives_more_tokens_to_higher_alpha():
    alphas = [0.2, 0.4, 0.6, 0.8, 0.95] * 8
    alloc = allocate_greedy(make_batch(alphas), alphas, 7)
    by_alpha = {}
    for a, k in zip(alphas, alloc.ks):
        by_alpha.setdefault(a, set()).add(k)
    ks = [max(by_alpha[a]) for a in sorted(by_alpha)]
    assert ks == sorted(ks) and ks[0] < ks[-1]


@pytest.mark.parametrize("size,margin", [(8, 1.0), (64, 1.02), (256, 1.02)])
def test_greedy_predicted_goodput_beats_best_uniform_on_mixed_alphas(size, margin):
    rng = random.Random(size)
    alphas = [rng.betavariate(2, 1) for _ in range(size)]
    batch = make_batch(alphas)
    alloc = allocate_greedy(batch, alphas, 7)
    best_uniform = max(goodput_of_ks(batch, [k] * size, alphas).value for k in range(8))
    assert alloc.goodput >= best_uniform * margin
    assert alloc.goodput == pytest.approx(goodput_of_ks(batch, alloc.ks, alphas).value)


def test_greedy_is_cheap_at_256_requests():
    """A few Python calls per request at batch 256 (about 1,600 in all; ~3 ms): counted, not timed, so a loaded
    machine cannot fail it."""
    rng = random.Random(1)
    alphas = [rng.betavariate(2, 1) for _ in range(256)]
    batch = make_batch(alphas)
    _, calls = python_calls(allocate_greedy, batch, alphas, 7)
    assert calls <= 10 * 256


def test_greedy_respects_caps():
    batch = make_batch([0.9] * 4, style="ngram")
    batch.requests[0].ngram_match = False
    batch.requests[1].budget_left = 3
    ks = allocate_greedy(batch, [0.9] * 4, 7).ks
    assert ks[0] == 0 and ks[1] <= 2 and max(ks) <= 7


def test_goodput_greedy_learns_per_request_alpha_without_reading_it():
    p = GoodputGreedy()
    batch = make_batch([0.5] * 4)
    for _ in range(30):  # request 0 accepts all 4, request 3 rejects the first token every time
        ks = p.propose(batch)
        assert all(0 <= k <= 7 for k in ks)
        p.observe(StepOutcome(batch.requests, [4, 4, 4, 4], [4, 3, 1, 0], 0.01))
    alphas = p.request_alphas(batch)
    assert alphas[0] > alphas[1] > alphas[2] > alphas[3]
    ks = p.propose(batch)
    assert ks[0] >= ks[3]
    assert all(r.alpha_reads == 0 for r in batch.requests)


def test_goodput_greedy_survives_an_unlucky_first_step():
    p = GoodputGreedy()
    batch = make_batch([0.7])
    assert p.propose(batch) == [5]  # k* at B=1, alpha 0.7
    p.observe(StepOutcome(batch.requests, [5], [0], 0.01))  # one rejection must not pin alpha to 0
    assert p.estimated_alpha() == pytest.approx((0 + 10 * 0.7) / (1 + 10))
    assert p.propose(batch)[0] > 0


def test_tree_steps_are_priced_as_one_draft_pass():
    shape = batch_shape(make_batch([0.7] * 3, style="tree"), [3, 0, 2])
    assert (shape.max_k, shape.draft_batch_sizes, shape.verify_tokens, shape.num_proposing) == (1, (2,), 8, 2)
    chain = batch_shape(make_batch([0.7] * 3), [3, 0, 2])
    assert (chain.max_k, chain.draft_batch_sizes) == (3, (2, 2, 1))


def test_oracle_reads_true_alpha():
    batch = make_batch([0.95, 0.95, 0.1, 0.1])
    ks = make_policy("oracle").propose(batch)
    assert all(r.alpha_reads > 0 for r in batch.requests)
    assert ks[0] > ks[2]


def test_only_oracle_reads_alpha():
    for spec in ("none", "fixed:3", "vllm-disable", "vllm-table:table=1-8:3", "smartspec", "turbospec",
                 "turbospec:per_request=1", "goodput-greedy"):
        batch = make_batch([0.7] * 8)
        policy = make_policy(spec)
        for _ in range(3):
            ks = policy.propose(batch)
            policy.observe(StepOutcome(batch.requests, ks, [min(k, 1) for k in ks], 0.01))
        assert all(r.alpha_reads == 0 for r in batch.requests), spec


# ---- tree model -----------------------------------------------------------------------------
def test_tree_without_siblings_is_the_chain():
    for k in range(8):
        assert 1 + expected_accepted_tree(0.7, k, sibling_decay=0.0) == pytest.approx(expected_tokens(0.7, k))


def test_tree_expected_grows_and_beats_chain():
    values = [expected_accepted_tree(0.6, n) for n in range(10)]
    assert values == sorted(values) and values[0] == 0.0
    assert 1 + values[7] > expected_tokens(0.6, 7)


def test_tree_sample_mean_matches_expectation():
    rng = random.Random(7)
    n = 20_000
    mean = sum(sample_accepted_tree(0.6, 6, rng) for _ in range(n)) / n
    assert mean == pytest.approx(expected_accepted_tree(0.6, 6), abs=0.03)
    assert all(0 <= sample_accepted_tree(0.9, 5, rng) <= 5 for _ in range(200))


def test_tree_style_goodput_policies():
    batch = make_batch([0.6] * 16, style="tree")
    assert step_tokens(0.6, 4, "tree") == pytest.approx(1 + expected_accepted_tree(0.6, 4))
    k = scan_uniform_k(batch, 0.6, 7)
    ks = allocate_greedy(batch, [0.6] * 16, 7).ks
    assert k > 0 and max(ks) > 0


# ---- table builder --------------------------------------------------------------------------
def test_build_k_table_from_goodput():
    table = build_k_table(COST, 0.7, 512, 7, [1, 16, 64, 128])
    assert table == [[1, 15, 5], [16, 63, 4], [64, 127, 3], [128, 128, 2]]
    policy = make_policy("vllm-table:table=" + ";".join(f"{s}-{e}:{k}" for s, e, k in table))
    assert policy.propose(make_batch([0.7] * 70))[0] == 3


def test_build_table_cli(tmp_path, capsys):
    out = tmp_path / "table.json"
    assert build_table_main(["--calibration", "turbospec-llama3-8b-eagle-h100", "--alpha", "0.7", "--context", "512",
                             "--max-k", "7", "--max-batch", "64", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows[0][:1] == [1] and rows[-1][1] == 64 and rows[0][2] == 5  # the reference's k* = 5 at B = 1
    assert build_table_main(["--alpha", "0.6338", "--context", "256", "--candidates", "0,2,3", "--out", str(out)]) == 0
    last = json.loads(out.read_text())[-1]  # the k values of vLLM PR #32374's table; by default up to batch 1024
    assert last[1:] == [1024, 0] and 100 <= last[0] <= 300  # speculation stops at a batch of a few hundred
    assert build_table_main(["--candidates", "0,x"]) == 2
    assert build_table_main(["--alpha", "1.5"]) == 2
    assert build_table_main(["--calibration", "no-such-calibration"]) == 2
    assert build_table_main(["--out", str(tmp_path / "missing" / "t.json"), "--max-batch", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("build-k-table: error:") for line in err)


def test_build_table_from_per_position_rates_follows_the_goodput_rule(tmp_path, capsys):
    """--position-rates (vLLM PR #32374's acceptance_rate_per_pos: 0.681, 0.391, 0.204, 0.101, 0.051) counts
    1 + the first k rates per request; each row's K beats its neighbours by that count over the step time."""
    rates = (0.681, 0.391, 0.204, 0.101, 0.051)
    out = tmp_path / "t.json"
    assert build_table_main(["--position-rates", ",".join(map(str, rates)), "--context", "384", "--max-batch", "256",
                             "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows[0][0] == 1 and rows[-1][1] == 256 and rows[0][2] >= rows[-1][2]
    cost = CostModel(load_calibration("llama3.1-8b-eagle-h100"))
    for start, end, k in rows:
        for b in {start, end}:
            def goodput(kk: int) -> float:
                return b * (1 + sum(rates[:kk])) / cost.step_time_s(uniform_shape(b, b * 384, kk))
            assert all(goodput(k) >= goodput(other) for other in range(6))
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)  # K never rises with the batch


@pytest.mark.parametrize("argv, fragment", [
    (["--position-rates", "0.5,0.6"], "cannot rise"),
    (["--position-rates", "0.5,x"], "comma-separated numbers"),
    (["--position-rates", "1.5"], "in [0, 1]"),
    (["--position-rates", "0.6,0.3", "--candidates", "0,3"], "beyond the 2"),
])
def test_bad_position_rates_are_one_line(argv, fragment, capsys):
    assert build_table_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("build-k-table: error:") and fragment in err[0]


# ---- spec parsing ---------------------------------------------------------------------------
def test_all_policies_build_with_every_parameter():
    specs = ["vllm-disable:k=2,threshold=8", "vllm-table:table=1-4:5;5-16:3;17-1024:0",
             "smartspec:k_max=5,interval=10,bias=1.2,sticky_steps=50,alpha=0.6,counting=prefix,oom_guard=0,"
             "sticky=redecide,ngram=as-draft,lookup_ms=0.5",
             "turbospec:k_max=5,interval=100,window=50,initial_alpha=0.6,per_request=1,counting=position,reprobe=verify",
             "goodput-greedy:k_max=5,prior=20,initial_alpha=0.6,window=50,counting=prefix", "oracle:k_max=4"]
    for spec in specs:
        assert make_policy(spec).propose(make_batch([0.7] * 4)) is not None


@pytest.mark.parametrize("spec", ["nope", "smartspec:k_max=-1", "smartspec:bias=nan", "smartspec:alpha=2",
                                  "smartspec:counting=maybe", "smartspec:what=1", "turbospec:window=0",
                                  "vllm-table", "vllm-table:table=4-1:3", "vllm-table:table=1-4:3;3-8:1",
                                  "vllm-table:table=/no/such/file.json", "goodput-greedy:prior=inf",
                                  "turbospec:per_request=maybe", "vllm-disable:threshold=0", "smartspec:interval"])
def test_bad_specs_raise_policy_spec_error(spec):
    with pytest.raises(PolicySpecError):
        make_policy(spec)


NAMES = ["none", "fixed", "vllm-disable", "vllm-table", "smartspec", "turbospec", "goodput-greedy", "oracle"]
KEYS = ["k", "k_max", "threshold", "table", "interval", "bias", "sticky_steps", "alpha", "counting", "window",
        "oom_guard", "reprobe", "initial_alpha", "per_request", "prior", "sticky", "ngram", "lookup_ms", "x"]


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(NAMES) | st.text(max_size=12),
       items=st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=6),
                                st.text(max_size=10) | st.integers(-5, 300).map(str)
                                | st.floats(allow_nan=True).map(str)), max_size=4),
       sep=st.sampled_from([":", "", "::"]))
def test_fuzzed_specs_raise_only_policy_spec_error(name, items, sep):
    spec = name + sep + ",".join(f"{k}={v}" for k, v in items)
    try:
        policy = make_policy(spec)
    except PolicySpecError:
        return
    assert policy.propose(make_batch([0.7] * 2)) is not None

"""Serving like vLLM V1 and knowing only what a server knows (issue 11): engine modes, max_tokens versus the
true length, max_model_len, the closed loop, the admission watermark, and calibrations that cannot price a style."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from specdec_sim import SimConfig, run_simulation
from specdec_sim.costmodel import CostModel, PrefillTerms, step_shape
from specdec_sim.costmodel.calibration import calibration_from_dict
from specdec_sim.simulator.kvcache import KVCache
from specdec_sim.simulator.request import Request
from specdec_sim.simulator.scheduler import Scheduler
from specdec_sim.traces import Trace

TOY = {"name": "toy", "device": "toy GPU", "target": {"fixed_ms": 10.0, "per_batched_token_ms": 0.01},
       "draft": {"kind": "sequential", "forward": {"fixed_ms": 1.0}}, "step_overhead_ms": 0.5,
       "memory": {"gpu_memory_gib": 80.0, "weights_gib": 16.0, "kv_bytes_per_token": 131072}}


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(TOY))
    return str(path)


def trace_of(prompts, outputs, arrivals=None) -> Trace:
    n = len(prompts)
    return Trace(np.arange(n), np.zeros(n) if arrivals is None else np.asarray(arrivals, float),
                 np.asarray(prompts), np.asarray(outputs), "test")


def cost(toy) -> CostModel:
    return CostModel(calibration_from_dict(dict(TOY), toy))


# ---- a lone request: closed form in both engines ---------------------------------------------------------

@pytest.mark.parametrize("engine", ["v0", "v1"])
def test_lone_request_ttft_and_e2e_are_the_sum_of_its_steps(toy, engine):
    prompt, output = 700, 40
    res = run_simulation(trace_of([prompt], [output]), SimConfig(calibration=toy, engine=engine, acceptance="0"),
                         "none")
    c = cost(toy)
    prefill = c.step_time_s(step_shape([], 0, PrefillTerms(prompt, 1)))
    decodes = sum(c.step_time_s(step_shape([0], prompt + 1 + j)) for j in range(output - 1))
    row = res.requests.iloc[0]
    assert row.ttft_ms == pytest.approx(prefill * 1e3, rel=1e-12)
    assert row.e2el_ms == pytest.approx((prefill + decodes) * 1e3, rel=1e-12)
    assert res.summary["engine"] == engine


def test_v1_mixed_steps_carry_decodes_with_drafts_and_chunks_under_the_budget(toy):
    trace = trace_of([3000] * 12, [60] * 12, np.arange(12) * 0.05)
    config = SimConfig(calibration=toy, engine="v1", max_num_batched_tokens=2048, acceptance="0.6")
    res = run_simulation(trace, config, "fixed:3")
    steps = res.steps
    mixed = steps[(steps.num_prefill > 0) & (steps.num_decode > 0) & (steps.k_max > 0)]
    assert len(mixed) > 5
    assert (steps.verify_tokens + steps.prefill_tokens <= 2048).all()
    v0 = run_simulation(trace, SimConfig(calibration=toy, engine="v0", max_num_batched_tokens=4096,
                                         acceptance="0.6"), "fixed:3").steps
    assert not ((v0.num_prefill > 0) & (v0.num_decode > 0)).any()  # V0: a step with prefill carries only prefill
    assert res.summary["chunked_prefill"] and res.summary["spec_in_mixed_steps"]


def test_v1_defaults_follow_the_gpu(toy):
    big = run_simulation(trace_of([10], [5]), SimConfig(calibration=toy), "none").summary
    assert (big["max_num_seqs"], big["max_num_batched_tokens"]) == (1024, 8192)
    small = dict(TOY, device="NVIDIA A100 80GB")
    cal = calibration_from_dict(small, "a100")
    res = run_simulation(trace_of([10], [5]), SimConfig(calibration=toy), "none", calibration=cal).summary
    assert (res["max_num_seqs"], res["max_num_batched_tokens"]) == (256, 2048)
    v0 = run_simulation(trace_of([10], [5]), SimConfig(calibration=toy, engine="v0"), "none").summary
    assert (v0["max_num_seqs"], v0["max_num_batched_tokens"]) == (256, 8192)


# ---- what a server knows -------------------------------------------------------------------------------------

def _decisions_until_first_finish(res) -> pd.DataFrame:
    first = res.requests.finish_s.min()
    steps = res.steps
    return steps[steps.start_s + steps.step_time_s < first][["step", "replica", "num_decode", "k_mean", "k_max"]]


@pytest.mark.parametrize("policy", ["smartspec", "turbospec", "goodput-greedy", "vllm-disable:k=3,threshold=4"])
def test_no_policy_cap_or_router_reads_the_true_length(toy, policy):
    """Two traces that differ only in output lengths: identical decisions until the first request finishes."""
    rng = np.random.default_rng(0)
    prompts = rng.integers(100, 900, 40)
    arrivals = np.sort(rng.uniform(0, 0.5, 40))
    short = trace_of(prompts, rng.integers(20, 60, 40), arrivals)
    long = trace_of(prompts, rng.integers(300, 900, 40), arrivals)
    config = SimConfig(calibration=toy, replicas=2, router="least-tokens", max_tokens=1000, acceptance="0.7")
    a, b = (run_simulation(t, config, policy, seed=1) for t in (short, long))
    da, db = _decisions_until_first_finish(a), _decisions_until_first_finish(b)
    n = min(len(da), len(db))
    assert n > 20
    pd.testing.assert_frame_equal(da.iloc[:n].reset_index(drop=True), db.iloc[:n].reset_index(drop=True))
    before = (a.requests.arrival_s < min(a.requests.finish_s.min(), b.requests.finish_s.min())).to_numpy()
    assert before.sum() > 10
    assert (a.requests.replica.to_numpy()[before] == b.requests.replica.to_numpy()[before]).all()  # by max_tokens


def test_oracle_lengths_let_the_router_see_the_truth(toy):
    rng = np.random.default_rng(1)
    prompts, arrivals = rng.integers(100, 900, 40), np.sort(rng.uniform(0, 2.0, 40))
    short = trace_of(prompts, rng.integers(20, 60, 40), arrivals)
    long = trace_of(prompts, rng.integers(300, 900, 40), arrivals)
    config = SimConfig(calibration=toy, replicas=2, router="least-tokens", max_tokens=1000, oracle_lengths=True)
    a, b = (run_simulation(t, config, "none", seed=1) for t in (short, long))
    assert (a.requests.replica.to_numpy() != b.requests.replica.to_numpy()).any()


def test_k_is_capped_by_max_tokens_not_by_the_true_end(toy):
    """max_tokens 10 with a true length of 10: the server caps k at its budget; a true length of 4 it never sees."""
    config = SimConfig(calibration=toy, max_tokens=10, acceptance="0")
    ks = run_simulation(trace_of([50], [4]), config, "fixed:5").steps
    assert ks[ks.num_decode > 0].k_max.tolist() == [5, 5, 5]  # 3 decode steps, each proposing the full 5
    oracle = run_simulation(trace_of([50], [4]), SimConfig(calibration=toy, max_tokens=10, acceptance="0",
                                                           oracle_lengths=True), "fixed:5").steps
    assert oracle[oracle.num_decode > 0].k_max.tolist() == [2, 1, 0]  # capped by the true tokens left - 1


def test_outputs_stop_at_max_tokens_and_long_prompts_are_rejected(toy):
    trace = trace_of([100, 5000, 200], [50, 10, 400])
    res = run_simulation(trace, SimConfig(calibration=toy, max_model_len=4096, max_tokens=300), "none")
    req = res.requests
    assert req.status.tolist() == ["finished", "failed", "finished"]
    assert "exceeds max_model_len 4096" in req.reason[1]
    assert req.emitted_tokens.tolist()[0::2] == [50, 300]
    assert res.summary["max_model_len"] == 4096


def test_max_model_len_defaults_to_the_calibrations_model(toy):
    """max_tokens defaults to max_model_len - prompt (vLLM): a 990-token prompt may generate 10 tokens."""
    cal = calibration_from_dict(dict(TOY, max_model_len=1000), "toy")
    res = run_simulation(trace_of([900, 990, 1000], [50, 50, 50]), SimConfig(calibration=toy), "none",
                         calibration=cal)
    assert res.requests.status.tolist() == ["finished", "finished", "failed"]
    assert res.requests.emitted_tokens.tolist()[:2] == [50, 10]


# ---- closed loop ---------------------------------------------------------------------------------------------

def test_max_concurrency_one_never_has_two_in_flight_and_gives_batch1_tpot(toy):
    trace = trace_of([256] * 8, [33] * 8, np.arange(8) * 0.001)
    res = run_simulation(trace, SimConfig(calibration=toy, max_concurrency=1, acceptance="0"), "none")
    r = res.requests.sort_values("arrival_s")
    assert (r.arrival_s.to_numpy()[1:] >= r.finish_s.to_numpy()[:-1] - 1e-12).all()
    c = cost(toy)
    per_token = [c.step_time_s(step_shape([0], 257 + j)) for j in range(32)]
    assert r.tpot_ms.to_numpy() == pytest.approx(np.mean(per_token) * 1e3, rel=1e-12)
    assert res.summary["max_concurrency"] == 1


def test_max_concurrency_sixteen_runs_static_batches_of_sixteen(toy):
    trace = trace_of([128] * 32, [20] * 32)
    res = run_simulation(trace, SimConfig(calibration=toy, max_concurrency=16, acceptance="0"), "none")
    c = cost(toy)
    prefill = c.step_time_s(step_shape([], 0, PrefillTerms(16 * 128, 16)))
    decode = sum(c.step_time_s(step_shape([0] * 16, 16 * (129 + j))) for j in range(19))
    r = res.requests.sort_values("request_id")
    assert r.ttft_ms.iloc[:16].to_numpy() == pytest.approx(prefill * 1e3, rel=1e-12)
    assert r.e2el_ms.to_numpy() == pytest.approx((prefill + decode) * 1e3, rel=1e-12)
    assert r.arrival_s.iloc[16:].to_numpy() == pytest.approx(prefill + decode, rel=1e-12)  # sent when 16 ended


def test_ramp_up_opens_slots_one_by_one(toy):
    trace = trace_of([64] * 4, [400] * 4)
    res = run_simulation(trace, SimConfig(calibration=toy, max_concurrency=4, concurrency_ramp_up_s=2.0), "none")
    assert res.requests.sort_values("request_id").arrival_s.to_numpy() == pytest.approx([0.0, 0.5, 1.0, 1.5])


# ---- watermark and proposer styles -----------------------------------------------------------------------------

def test_admission_keeps_the_watermark_free():
    kv = KVCache(100, 16)
    sched = Scheduler(kv, 64, 100_000, False, False, 3, watermark_blocks=10)
    for i in range(10):
        sched.waiting.append(Request(i, i, 16 * 20 - 1, 5, 0.5))  # 20 blocks each with the first token
    plan = sched.plan(lambda reqs, kv, p, n: [0] * len(reqs))
    assert len(plan.prefills) == 4 and kv.free >= 10  # a fifth would leave 0 < 10 blocks free
    no_mark = Scheduler(KVCache(100, 16), 64, 100_000, False, False, 3)
    for i in range(10):
        no_mark.waiting.append(Request(i, i, 16 * 20 - 1, 5, 0.5))
    assert len(no_mark.plan(lambda reqs, kv, p, n: [0] * len(reqs)).prefills) == 5


@pytest.mark.parametrize("style, calibration, needle", [
    ("draft", "turbospec-llama3-70b-tp4-ngram-h100", "prices prompt lookup (n-gram) drafting only"),
    ("tree", "turbospec-llama3-70b-tp4-ngram-h100", "prices prompt lookup (n-gram) drafting only"),
])
def test_a_style_the_calibration_cannot_price_is_refused_in_one_line(capsys, style, calibration, needle):
    from specdec_sim.simulator.cli import main

    rc = main(["--trace", "azure-conv", "--max-requests", "5", "--quiet", "--style", style, "--calibration",
               calibration])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1


def test_ngram_on_a_draft_calibration_without_an_ngram_cost_is_refused(toy, capsys):
    from specdec_sim.simulator.cli import main

    rc = main(["--trace", "azure-conv", "--max-requests", "5", "--quiet", "--style", "ngram", "--calibration", toy])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "states no n-gram cost" in err


def test_max_tokens_column_of_the_trace_wins_over_the_option(toy, tmp_path):
    from specdec_sim.traces import load_trace

    path = tmp_path / "t.csv"
    path.write_text("request_id,arrival_time_s,prompt_tokens,output_tokens,max_tokens\n"
                    "0,0.0,100,50,20\n1,0.1,100,50,80\n")
    trace = load_trace(path)
    assert trace.max_tokens.tolist() == [20, 80]
    res = run_simulation(trace, SimConfig(calibration=toy, max_tokens=30), "none")
    assert res.requests.emitted_tokens.tolist() == [20, 50]
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,arrival_time_s,prompt_tokens,output_tokens,max_tokens\n0,0.0,100,50,0\n")
    from specdec_sim.traces import TraceError
    with pytest.raises(TraceError, match="row 1.*max_tokens"):
        load_trace(bad)


def test_simulate_and_sweep_run_a_closed_loop_from_time_zero(tmp_path):
    """Without --rate a closed loop ignores the trace's times (vllm bench serve's request rate inf)."""
    import json

    from specdec_sim.simulator.cli import main
    from specdec_sim.simulator.sweep.runner import RunSpec, simulate as sweep_simulate

    assert main(["--trace", "azure-conv", "--max-requests", "12", "--max-concurrency", "3", "--policy", "none",
                 "--quiet", "--out", str(tmp_path / "o")]) == 0
    r = pd.read_csv(tmp_path / "o" / "none" / "requests.csv").sort_values("arrival_s")
    assert (r.arrival_s.to_numpy()[:3] == 0).all()
    finishes = np.sort(r.finish_s.to_numpy())
    assert r.arrival_s.to_numpy()[3:] == pytest.approx(finishes[:9])  # each send when a slot frees
    summary = json.loads((tmp_path / "o" / "none" / "summary.json").read_text())
    assert summary["max_concurrency"] == 3
    run = RunSpec("azure-conv", policy="none", max_requests=12, engine=(("max_concurrency", 3),))
    swept = sweep_simulate(run).requests.sort_values("arrival_s")
    np.testing.assert_allclose(swept.arrival_s.to_numpy(), r.arrival_s.to_numpy())

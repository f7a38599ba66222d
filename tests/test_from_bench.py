"""build-calibration --from-bench: serving terms fitted to vllm bench serve results, checked by a round trip.

A known calibration ("truth": the published-fit serving terms of Llama-3.1-8B + EAGLE on an H100, each
multiplied by a factor) serves small simulated runs at several --max-concurrency values, with and without
speculation; each run is written as a `vllm bench serve` result JSON (vLLM's keys only: some files with
per-request `input_lens`/`output_lens`, some with totals only, one at a Poisson request rate). The command
fits them starting from the published-fit terms (so its start is the truth perturbed), and the calibration
it writes must predict runs it never saw (other concurrencies) within 3 %. The files are generated with the
simulation seed the fit uses, so what is checked is the recovery of the calibration, not sampling noise
(acceptance draws of different seeds move these 20-60 request runs by a few percent on their own).
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from specdec_sim.costmodel import load_calibration
from specdec_sim.profiler import bench_build, bench_fit, bench_results
from specdec_sim.profiler import roofline_cli as build_cli
from specdec_sim.profiler.bench_fit import bench_case, fit_bench, match_acceptance, measured_matrix, predict_all
from specdec_sim.profiler.bench_results import BenchError, read_bench, read_bench_files
from specdec_sim.profiler.published import DEFAULT_PUBLISHED, read_published
from specdec_sim.profiler.roofline_build import SERVING_PARAMS, build_calibration, make_setting
from specdec_sim.profiler.roofline_efficiency import load_efficiency_table
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine import run_simulation
from specdec_sim.traces import Trace, synthetic_trace

SETTING = ("llama3.1-8b", "eagle", "h100-sxm", 1)
BASE = ["--target", "llama3.1-8b", "--proposer", "eagle", "--gpu", "h100-sxm", "--name", "mine"]
FACTORS = (1.35, 0.6, 1.3, 0.7, 1.25, 0.75, 1.3, 0.8)  # truth = published fit x these (cycled over the terms)
ALPHA = 0.7
K = 3
VLLM_KEYS = ("duration", "completed", "total_input_tokens", "total_output_tokens", "request_throughput",
             "output_throughput", "total_token_throughput", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms",
             "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "median_itl_ms", "p99_itl_ms",
             "mean_e2el_ms")


@pytest.fixture(scope="module")
def truth():
    """The published-fit terms (the command's start) and the truth calibration made from them x FACTORS."""
    table, measures = load_efficiency_table(None), read_published(DEFAULT_PUBLISHED)
    target, proposer, gpu, tp = SETTING
    start = build_calibration("truth", target, proposer, gpu, tp, table=table)
    setting = make_setting("truth", target, proposer, gpu, tp, table, measures)
    theta0 = np.array([start.theta[n] for n in SERVING_PARAMS])
    factors = np.resize(np.array(FACTORS), len(theta0))

    def assemble(theta):
        return replace(setting.assemble(np.asarray(theta, dtype=float)), device=start.calibration.device)

    return {"start": theta0, "theta": theta0 * factors, "cal": assemble(theta0 * factors), "assemble": assemble}


def bench_json(path: Path, cal, n: int, concurrency: int | None, k: int, detailed: bool, rate: float | None = None,
               seed: int = 0) -> Path:
    """A vllm bench serve result of `n` requests simulated with `cal` (prompts 64-511, outputs 16-95 tokens with
    per-request lengths; else all 256 in, 64 out)."""
    rng = np.random.default_rng(1000 + (concurrency or 0) * 10 + k)
    prompts = rng.integers(64, 512, n) if detailed else np.full(n, 256)
    outputs = rng.integers(16, 96, n) if detailed else np.full(n, 64)
    arrival = synthetic_trace(rate, num_requests=n, seed=seed).arrival_s if rate else np.zeros(n)
    trace = Trace(request_id=np.arange(n), arrival_s=arrival, prompt_tokens=prompts, output_tokens=outputs,
                  source="test")
    config = SimConfig(max_concurrency=concurrency, acceptance=ALPHA, max_model_len=0, policy_calibration="same",
                       record_steps=False)
    summary = run_simulation(trace, config, f"fixed:{k}" if k else "none", seed, calibration=cal).summary
    data = {"date": "20261208-000000", "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B-Instruct",
            "num_prompts": n, "request_rate": rate if rate else "inf", "burstiness": 1.0,
            "max_concurrency": concurrency, "failed": 0}
    data.update({key: summary[key] for key in VLLM_KEYS})
    data.update({key: value for key, value in summary.items() if key.startswith("spec_decode_")})
    if detailed:
        data["input_lens"], data["output_lens"] = prompts.tolist(), outputs.tolist()
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def files(truth, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    seen = [bench_json(root / f"c{c}_k{k}.json", truth["cal"], n, c, k, detailed=c != 4)
            for c, n in ((1, 24), (4, 40), (16, 64)) for k in (0, K)]
    seen.append(bench_json(root / "rate12_k3.json", truth["cal"], 60, None, K, detailed=True, rate=12.0))
    unseen = [bench_json(root / f"unseen_c{c}_k{k}.json", truth["cal"], n, c, k, detailed=True)
              for c, n in ((2, 80), (8, 96)) for k in (0, K)]
    return {"seen": seen, "unseen": unseen, "root": root}


def held_out_errors(cal, paths, truth=None) -> tuple[np.ndarray, np.ndarray | None]:
    """% error of `cal`'s prediction of each file's metrics (simulated as the fit simulates them), and of the
    same simulations against the truth's (the recovery error, without sampling noise)."""
    cases = [match_acceptance(bench_case(run, "draft"), cal) for run in read_bench_files(paths)]
    measured, predicted = measured_matrix(cases), predict_all(cases, cal)
    recovery = None if truth is None else (predicted / predict_all(cases, truth) - 1.0) * 100.0
    return (predicted - measured) / measured * 100.0, recovery


@pytest.fixture(scope="module")
def fitted(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "mine.json"
    argv = BASE + ["--out", str(out), "--from-bench", *map(str, files["seen"])]
    rc = build_cli.main(argv)
    assert rc == 0
    return out


def test_round_trip_recovers_a_calibration_that_predicts_unseen_runs(truth, files, fitted, capsys):
    cal = load_calibration(fitted)
    before, _ = held_out_errors(truth["assemble"](truth["start"]), files["unseen"])
    after, recovery = held_out_errors(cal, files["unseen"], truth["cal"])
    print(f"unseen runs: start max |err| {np.abs(before).max():.2f} %, fitted {np.abs(after).max():.2f} % "
          f"(mean {np.abs(after).mean():.2f} %); fitted vs truth on the same simulations: max "
          f"{np.abs(recovery).max():.2f} %")
    assert np.abs(before).max() > 5.0  # the start is far enough off for the fit to matter
    assert np.abs(after).max() < 3.0, after.round(2)
    assert np.abs(recovery).max() < 1.5, recovery.round(2)
    fit = cal.fit_error
    keys = [k for k in fit if k.startswith("bench:")]
    assert len(keys) == len(files["seen"])
    for key in keys:
        entry = fit[key]
        assert entry["unit"] == "% of measured" and entry["points"] == 4
        assert entry["mape_pct"] < 2.0 and entry["loo_mape_pct"] < 3.0, (key, entry["mape_pct"], entry["loo_mape_pct"])
        assert set(entry["metrics"]) == {"mean_tpot_ms", "mean_itl_ms", "mean_ttft_ms", "output_throughput"}


def test_written_calibration_names_every_file_and_the_terms_it_moved(files, fitted):
    cal = load_calibration(fitted)
    prov = cal.provenance
    import hashlib
    recorded = {Path(r["path"]).name: r for r in prov["bench_results"]}
    for path in files["seen"]:
        assert recorded[path.name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert recorded["c1_k3.json"]["k"] == K and recorded["c1_k0.json"]["k"] is None
    assert recorded["c4_k0.json"]["per_request_lengths"] is False
    assert recorded["rate12_k3.json"]["request_rate"] == 12.0
    fitted_terms = prov["bench_fit"]["fitted_terms"]
    assert fitted_terms and set(fitted_terms) <= set(SERVING_PARAMS)
    for name in fitted_terms:
        assert "vllm bench serve" in prov["serving_terms"][name]["how"]
    assert "--from-bench" in prov["command"]


def test_cli_prints_measured_fitted_and_leave_one_out_per_file(files, tmp_path, capsys):
    out = tmp_path / "two.json"
    two = [str(files["seen"][4]), str(files["seen"][5])]  # c=16 without and with speculation
    rc = build_cli.main(BASE + ["--out", str(out), "--from-bench", *two, "--bench-requests", "40"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert "c16_k0.json" in stdout and "LOO err %" in stdout and "leave-one-out: mean |err|" in stdout
    assert "TPOT ms" in stdout and "output tok/s" in stdout
    assert "Traceback" not in err
    cal = load_calibration(out)
    assert cal.provenance["bench_results"][0]["simulated_requests"] == 40  # 40 of 64, and 2 x c = 32 <= 40


def test_terms_the_runs_do_not_constrain_keep_their_start(truth, files, fitted):
    """Runs without speculation say nothing about the drafter: fewer terms are fitted than with the runs with
    speculation, and the others keep their starting values."""
    runs = read_bench_files([files["seen"][0], files["seen"][4]])  # c=1 and c=16, no speculation
    start = truth["start"]
    fit = fit_bench(truth["assemble"], SERVING_PARAMS, start, bench_build.term_floor(SERVING_PARAMS), runs,
                    "draft", leave_one_out=False)
    assert set(fit.fitted) < set(load_calibration(fitted).provenance["bench_fit"]["fitted_terms"])
    for i, name in enumerate(SERVING_PARAMS):
        if name not in fit.fitted:
            assert fit.theta[i] == start[i]
    assert fit.fitted and np.abs(fit.errors_pct("fit")).max() < 1.0


def test_bench_modules_name_no_serving_term():
    """The terms are read from roofline_build.SERVING_PARAMS at run time, never written into these modules."""
    for module in (bench_fit, bench_build, bench_results):
        text = Path(module.__file__).read_text()
        assert not [name for name in SERVING_PARAMS if name in text], module.__name__


# ---- reading the files: k, lengths and one-line errors --------------------------------------------

def vllm_result(**changes) -> dict:
    data = {"backend": "vllm", "model_id": "m", "num_prompts": 10, "request_rate": "inf", "burstiness": 1.0,
            "max_concurrency": 2, "duration": 1.0, "completed": 10, "total_input_tokens": 1000,
            "total_output_tokens": 500, "request_throughput": 10.0, "output_throughput": 500.0, "mean_ttft_ms": 20.0,
            "mean_tpot_ms": 5.0, "mean_itl_ms": 5.0}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def put(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_k_comes_from_the_file_else_the_option(tmp_path):
    rates = put(tmp_path, "rates.json", vllm_result(spec_decode_acceptance_length=2.5,
                                                   spec_decode_per_position_acceptance_rates=[0.8, 0.5, 0.2, 0.1]))
    counters = put(tmp_path, "counters.json", vllm_result(spec_decode_num_drafts=100, spec_decode_draft_tokens=300,
                                                         spec_decode_accepted_tokens=150))
    bare = put(tmp_path, "bare.json", vllm_result(spec_decode_acceptance_length=2.0))
    assert read_bench(rates).k == 4
    run = read_bench(counters)
    assert run.k == 3 and run.acceptance_length == pytest.approx(2.5)
    assert read_bench(bare, k_option=5).k == 5 and read_bench(bare, 5).k_source == "--num-speculative-tokens"
    assert read_bench(put(tmp_path, "plain.json", vllm_result())).k == 0
    assert math.isinf(read_bench(put(tmp_path, "inf.json", vllm_result(request_rate=float("inf")))).request_rate)
    lens = read_bench(put(tmp_path, "lens.json", vllm_result(input_lens=[10, 20, 30], output_lens=[5, 0, 7])))
    assert lens.input_lens == (10, 30) and lens.output_lens == (5, 7)  # output 0: a failed request, left out


def test_the_hand_made_vllm_result_reads():
    run = read_bench(Path(__file__).parent / "fixtures" / "vllm_bench_serve_result.json")
    assert (run.num_prompts, run.k, run.max_concurrency, run.input_lens) == (4, 0, None, (100, 200, 200, 300))
    assert math.isinf(run.request_rate) and run.measured["mean_tpot_ms"] == 21.5


def test_long_runs_at_low_concurrency_are_sampled_and_closed_loops_kept_whole(tmp_path):
    rng = np.random.default_rng(5)
    ins, outs = rng.integers(50, 2000, 1000).tolist(), rng.integers(400, 600, 1000).tolist()
    totals = dict(num_prompts=1000, completed=1000, total_input_tokens=sum(ins), total_output_tokens=sum(outs),
                  input_lens=ins, output_lens=outs)
    alone = read_bench(put(tmp_path, "c1.json", vllm_result(max_concurrency=1, **totals)))
    busy = read_bench(put(tmp_path, "c64.json", vllm_result(max_concurrency=64, **totals)))
    case = bench_case(alone, "draft")
    assert case.simulated < 1000 and case.simulated >= math.ceil(1 / (1 / 1000 + bench_fit.WARMUP_SLACK))
    assert case.trace.prompt_tokens.mean() == pytest.approx(np.mean(ins), rel=0.01)  # spread over prompt lengths
    assert bench_case(busy, "draft").simulated == 1000
    assert bench_case(busy, "draft", max_requests=300).simulated == 300
    paced = read_bench(put(tmp_path, "rate.json", vllm_result(max_concurrency=None, request_rate=4.0, burstiness=0.5)))
    arrivals = bench_case(paced, "draft").trace.arrival_s
    assert arrivals[0] == 0 and np.all(np.diff(arrivals) >= 0) and arrivals[-1] > 0


GUIDELLM = {"benchmarks": [{"type_": "generative_benchmark"}]}
MOONCAKE = '{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1]}\n' \
           '{"timestamp": 5, "input_length": 10, "output_length": 5, "hash_ids": [1]}\n'


@pytest.mark.parametrize("name, content, option, message", [
    ("broken.json", '{"num_prompts": 10,', [], "not JSON (line 1"),
    ("empty.json", "", [], "not JSON (empty file)"),
    ("list.json", [1, 2], [], "a JSON list, not a vllm bench serve result"),
    ("guidellm.json", GUIDELLM, [], "a GuideLLM report"),
    ("trace.jsonl", MOONCAKE, [], "a JSON-lines trace?"),
    ("record.json", {"timestamp": 0, "input_length": 10, "output_length": 5}, [], "a trace record, not a vllm"),
    ("summary.json", {**vllm_result(), "policy_spec": "none", "calibration_info": {}}, [], "a simulate summary.json"),
    ("missing.json", vllm_result(mean_itl_ms=...), [], "key 'mean_itl_ms' missing"),
    ("type.json", vllm_result(num_prompts="ten"), [], "key 'num_prompts' must be a whole number, not 'ten'"),
    ("nan.json", '{"num_prompts": 10, "request_rate": "inf", "completed": 10, "mean_tpot_ms": NaN}', [],
     "key 'mean_tpot_ms' must be a finite number, not nan"),
    ("zero.json", vllm_result(mean_ttft_ms=0), [], "key 'mean_ttft_ms' must be > 0"),
    ("rate.json", vllm_result(request_rate="fast"), [], "key 'request_rate' must be a number > 0 or \"inf\""),
    ("nok.json", vllm_result(spec_decode_acceptance_length=2.0), [],
     "does not state k (no spec_decode_per_position_acceptance_rates"),
    ("conflict.json", vllm_result(spec_decode_num_drafts=10, spec_decode_draft_tokens=30,
                                  spec_decode_accepted_tokens=10), ["--num-speculative-tokens", "4"],
     "key 'spec_decode_draft_tokens' states k = 3, but --num-speculative-tokens is 4"),
    ("al.json", vllm_result(spec_decode_acceptance_length=5.0, spec_decode_per_position_acceptance_rates=[0.5, 0.2]),
     [], "key 'spec_decode_acceptance_length' gives acceptance length 5, outside [1, k + 1 = 3]"),
    ("lens.json", vllm_result(input_lens=[1, 2], output_lens=[3]), [],
     "key 'output_lens' has 1 items, input_lens has 2"),
    ("more.json", vllm_result(completed=11), [], "key 'completed' is 11, more than num_prompts 10"),
    ("huge.json", vllm_result(total_input_tokens=10 * 2_000_000), [],
     "no request of this run finishes when simulated with calibration mine (needs more KV-cache blocks"),
])
def test_bad_bench_files_are_one_line_naming_file_and_key(tmp_path, capsys, name, content, option, message):
    path = put(tmp_path, name, content)
    rc = build_cli.main(BASE + ["--out", str(tmp_path / "c.json"), "--from-bench", str(path), *option])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"build-calibration: error: {path}: ") and message in err, err
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--from-bench"], "expected at least one argument"),
    (["--from-bench", "/nonexistent/run.json"], "/nonexistent/run.json: no such file"),
    (["--num-speculative-tokens", "3"], "--num-speculative-tokens needs --from-bench"),
    (["--bench-requests", "10"], "--bench-requests needs --from-bench"),
    (["--from-bench", "x.json", "--bench-requests", "0"], "--bench-requests 0: must be at least 1"),
    (["--from-bench", "x.json", "--engine", "v0"], "bench results are fitted as vLLM V1 runs"),
])
def test_bad_bench_options_are_one_line(tmp_path, capsys, argv, message):
    try:
        rc = build_cli.main(BASE + ["--out", str(tmp_path / "c.json"), *argv])
    except SystemExit as exc:  # argparse's own errors (OneLineParser: one line, exit 2)
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and message in err, err


def test_an_empty_list_of_files_is_refused():
    with pytest.raises(BenchError, match="no vllm bench serve result file given"):
        read_bench_files([])

"""build-calibration: Vidur efficiency fit, serving-term fit, profile CSV, shipped calibrations, CLI, bad inputs.

Every table here is synthetic (written to tmp_path from known efficiencies or a known calibration),
so a fit must recover the numbers it was made from; nothing outside the package is read. The shipped
calibrations are checked for what every calibration must carry (sources, fit error, positive times).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from specdec_sim.costmodel import (CostModel, available_calibrations, calibration_from_dict, load_calibration,
                                   uniform_shape)
from specdec_sim.costmodel.architectures import ARCHITECTURES
from specdec_sim.costmodel.hardware import GPUS
from specdec_sim.profiler import roofline_cli as build_cli
from specdec_sim.profiler.roofline_build import SERVING_PARAMS, BuildError, build_calibration, make_setting
from specdec_sim.profiler.published import COLUMNS, PublishedError, read_published
from specdec_sim.acceptance.rates import alpha_from_acceptance_length, expected_tokens
from specdec_sim.profiler.roofline_serving import predict
from specdec_sim.profiler.vidur import VIDUR_OPS, fit_allreduce, fit_efficiency, read_vidur_compute

H100 = GPUS["h100-sxm"]
TRUE = {"memory": 0.8, "compute": 0.6, "knee_tokens": 96.0, "fixed": 0.03}
TOKENS = [1, 2, 4] + list(range(8, 1025, 8)) + list(range(1040, 4097, 64))


def write_mlp(path: Path, arch_name: str, tps=(1, 2)) -> None:
    """A Vidur-like mlp.csv whose layer time is exactly the hinge roofline of TRUE (split over two GEMM ops)."""
    arch = ARCHITECTURES[arch_name]
    cols = [f"time_stats.{op}.median" for op in VIDUR_OPS]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols + ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "num_tokens",
                           "num_tensor_parallel_workers"])
        for tp in tps:
            params = arch.layer_linear_params() / tp
            for n in TOKENS:
                compute_ms = 2 * params / (H100.peak_tflops * 1e12 * TRUE["compute"]) * 1e3
                ms = (TRUE["fixed"] + params * 2 / (H100.hbm_tb_s * 1e12 * TRUE["memory"]) * 1e3
                      + compute_ms * max(0, n - TRUE["knee_tokens"]))
                ops = [0.0] * len(cols)
                ops[1], ops[5] = ms * 0.4, ms * 0.6  # attn_pre_proj, mlp_up_proj
                w.writerow(ops + [arch.heads, arch.kv_heads, arch.hidden, arch.intermediate, n, tp])


def write_allreduce(path: Path, latency_ms: float, efficiency: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", "time_stats.all_reduce.median", "num_workers", "size", "devices_per_node"])
        for i, size in enumerate(2 ** np.arange(11, 27)):
            for tp in (2, 4):
                t = latency_ms + size * 2 * (tp - 1) / tp / (H100.link_gb_s * 1e9 * efficiency) * 1e3
                w.writerow([i, t, tp, int(size), tp])


@pytest.fixture(scope="module")
def vidur_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vidur")
    write_mlp(root / "profiling/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv", "llama2-7b")
    write_mlp(root / "profiling/compute/h100/codellama/CodeLlama-34b-Instruct-hf/mlp.csv", "codellama-34b")
    write_allreduce(root / "profiling/network/h100_dgx/all_reduce.csv", 0.02, 0.7)
    return root


def test_vidur_fit_recovers_known_efficiencies(vidur_dir):
    series = read_vidur_compute(vidur_dir, "h100-sxm")
    assert {(s.model, s.tp) for s in series} == {("llama2-7b", 1), ("llama2-7b", 2), ("codellama-34b", 1),
                                                 ("codellama-34b", 2)}
    for tp in (1, None):
        fit = fit_efficiency(series, H100, tp)
        assert fit.memory == pytest.approx(TRUE["memory"], rel=1e-6)
        assert fit.compute == pytest.approx(TRUE["compute"], rel=1e-6)
        assert fit.knee_tokens == TRUE["knee_tokens"]
        assert fit.fixed_per_layer_ms == pytest.approx(TRUE["fixed"], rel=1e-6)
        crossover = H100.peak_tflops * TRUE["compute"] / (H100.hbm_tb_s * TRUE["memory"])
        assert fit.knee == pytest.approx(TRUE["knee_tokens"] / crossover, rel=1e-6)
        assert all(e["mape_pct"] < 1e-3 for e in fit.errors.values())


def test_allreduce_fit_recovers_latency_and_efficiency(vidur_dir):
    for tp in (2, 4):
        ar = fit_allreduce(vidur_dir, H100, tp)
        assert ar.latency_ms == pytest.approx(0.02, rel=1e-6)
        assert ar.efficiency == pytest.approx(0.7, rel=1e-6)


def test_vidur_shape_mismatch_is_one_line(tmp_path):
    path = tmp_path / "profiling/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"
    write_mlp(path, "llama2-70b")  # the 70B's shapes in the 7B's folder
    with pytest.raises(ValueError, match=r"mlp.csv: column n_embd is 8192, but llama2-7b has 4096"):
        read_vidur_compute(tmp_path, "h100-sxm")


# ---- serving terms ---------------------------------------------------------------------------

TABLE = {"attribution": "synthetic", "gpus": {"h100-sxm": {
    "tp": {"1": {"memory": 0.85, "compute": 0.65, "knee": 0.45, "knee_tokens": 100.0, "errors": {}}},
    "all": {"memory": 0.85, "compute": 0.65, "knee": 0.45, "knee_tokens": 100.0, "errors": {}}, "allreduce": {}}}}
TERMS = {"step_overhead_ms": 1.1, "per_request_ms": 0.002, "spec_per_request_ms": 0.012, "target_fixed_ms": 0.9,
         "draft_fixed_ms": 0.25, "dynamic_k_tax_ms": 0.4, "dynamic_k_tax_spec_ms": 0.6, "allreduce_latency_ms": 0.0,
         "legacy_spec_per_request_ms": 0.003}
THETA = np.array([TERMS[n] for n in SERVING_PARAMS])
TP1_UNUSED = ("allreduce_latency_ms",)  # no all-reduce at TP 1: no point constrains it


def measure_rows(cal, proposer: str) -> list[dict]:
    """Noise-free points of every metric kind, made from a known calibration: batch-1 TPOT and steps of the current
    engine, shares and steps of the legacy engine (PIECEWISE graphs), so that every serving term is identified."""
    from specdec_sim.profiler.published import Measure
    rows = [dict(set="syn_overhead", metric="step_overhead_ms", batch=1, k=0, acceptance_length=1.0, era="legacy")]
    for k in range(0, 8):
        rows.append(dict(set="syn_tpot", metric="tpot_ms", batch=1, k=k, acceptance_length=1 + 0.4 * k,
                         era="current"))
    for b in (1, 64, 128):
        for part in ("draft", "verify", "overhead"):
            rows.append(dict(set="syn_shares", metric=f"share_{part}_pct", batch=b, k=3, acceptance_length=1.0,
                             era="legacy"))
    for era in ("current", "legacy"):
        for b in (1, 16, 256):
            for k in (0, 2):
                rows.append(dict(set=f"syn_steps_{era}", metric="step_ms", batch=b, k=k, acceptance_length=1.0,
                                 era=era))
    out = []
    for r in rows:
        era = r.pop("era")
        m = Measure(set=r["set"], role="fit", target="llama3.1-8b", proposer=proposer, gpu="h100-sxm", tp=1,
                    metric=r["metric"], value=1.0, batch=r["batch"], k=r["k"], context_tokens=512,
                    acceptance_length=r["acceptance_length"], engine_era=era)
        out.append({**{c: "" for c in COLUMNS}, **r, "role": "fit", "target": "llama3.1-8b", "proposer": proposer,
                    "gpu": "h100-sxm", "tp": 1, "context_tokens": 512, "value": repr(predict(cal, m)),
                    "unit": "ms", "source": "synthetic", "engine_era": era})
    out.append({**{c: "" for c in COLUMNS}, "set": "p", "role": "parameter", "target": "llama3.1-8b", "proposer": "*",
                "gpu": "h100-sxm", "metric": "fit_ngram_draft_percentage", "value": "0.01", "source": "synthetic"})
    return out


def write_csv(path: Path, rows: list[dict], columns=COLUMNS) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, columns)
        w.writeheader()
        w.writerows(rows)
    return path


def test_serving_fit_recovers_known_terms(tmp_path):
    """The donor setting (8B + EAGLE-1, H100) fits every serving term; points made from known terms give them back."""
    truth = make_setting("truth", "llama3.1-8b", "eagle", "h100-sxm", 1, TABLE, []).assemble(THETA)
    published = write_csv(tmp_path / "pub.csv", measure_rows(truth, "eagle"))
    result = build_calibration("fit", "llama3.1-8b", "eagle", "h100-sxm", 1, published=published, table=TABLE)
    for name in SERVING_PARAMS:
        if name not in TP1_UNUSED:
            assert result.theta[name] == pytest.approx(TERMS[name], abs=2e-4), name
            assert "fitted to" in result.notes[name], name
    for name in ("syn_tpot", "syn_shares", "syn_steps_current", "syn_steps_legacy", "syn_overhead"):
        assert result.calibration.fit_error[name]["mape_pct"] < 0.05


def test_another_proposer_fits_its_drafter_and_takes_the_engine_terms_from_the_donor(tmp_path):
    """A draft model on the donor's target: its per-pass time is fitted to its own points, the engine's terms come
    from the EAGLE-1 fit of the same file."""
    terms = dict(TERMS, draft_fixed_ms=0.4)
    draft_truth = make_setting("truth", "llama3.1-8b", "draft:llama3.2-1b", "h100-sxm", 1, TABLE, []).assemble(
        np.array([terms[n] for n in SERVING_PARAMS]))
    eagle_truth = make_setting("truth", "llama3.1-8b", "eagle", "h100-sxm", 1, TABLE, []).assemble(THETA)
    rows = measure_rows(eagle_truth, "eagle") + [
        {**r, "set": r["set"] + "_draft"} for r in measure_rows(draft_truth, "draft:llama3.2-1b")
        if r["role"] == "fit" and r["proposer"] != "none" and r["k"] and int(r["k"]) > 0]
    published = write_csv(tmp_path / "pub.csv", rows)
    result = build_calibration("fit", "llama3.1-8b", "draft:llama3.2-1b", "h100-sxm", 1, published=published,
                               table=TABLE)
    assert result.theta["draft_fixed_ms"] == pytest.approx(0.4, abs=2e-3)
    assert "fitted to" in result.notes["draft_fixed_ms"]
    for name in ("step_overhead_ms", "per_request_ms", "spec_per_request_ms", "dynamic_k_tax_ms"):
        assert result.theta[name] == pytest.approx(TERMS[name], abs=2e-4), name
        assert result.notes[name].startswith("transferred"), name


def test_unmeasured_setting_transfers_terms_and_says_so(tmp_path):
    truth = make_setting("truth", "llama3.1-8b", "eagle", "h100-sxm", 1, TABLE, []).assemble(THETA)
    published = write_csv(tmp_path / "pub.csv", measure_rows(truth, "eagle"))
    table = {**TABLE, "gpus": {**TABLE["gpus"], "a100-80gb": TABLE["gpus"]["h100-sxm"]}}
    result = build_calibration("a100", "llama3-70b", "draft:llama3.2-1b", "a100-80gb", 1, published=published,
                               table=table)
    cal = result.calibration
    assert result.theta["step_overhead_ms"] == pytest.approx(TERMS["step_overhead_ms"], abs=2e-4)
    for name in ("target_fixed_ms", "dynamic_k_tax_ms", "dynamic_k_tax_spec_ms"):  # per target layer
        assert result.theta[name] == pytest.approx(TERMS[name] / 32 * 80, abs=1e-3), name
    assert result.theta["draft_fixed_ms"] == pytest.approx(TERMS["target_fixed_ms"] / 32 * 16, abs=1e-3)
    assert all(how.startswith("transferred") for how in result.notes.values())
    assert "transferred from" in cal.provenance["summary"] and cal.provenance["transferred_from_sources"]


def test_profile_csv_fits_forward_fixed_times(tmp_path):
    truth = make_setting("truth", "llama3.1-8b", "eagle", "h100-sxm", 1, TABLE, []).assemble(THETA)
    rows = []
    for role, coef in (("target", truth.target), ("draft", truth.draft.forward)):
        for kind, b, q, c in (("decode", 1, 1, 64), ("decode", 32, 1, 512), ("verify", 16, 4, 256),
                              ("prefill", 1, 512, 0)):
            attn2 = b * q * (c + q / 2) if kind == "prefill" else 0.0
            ms = coef.forward_ms(b * q, b * c, b, False, attn2)
            rows.append(dict(role=role, model="m", kind=kind, batch=b, query=q, context=c, status="ok", median_ms=ms))
    rows.append(dict(role="target", model="m", kind="decode", batch=512, query=1, context=0, status="skipped",
                     median_ms=""))
    path = write_csv(tmp_path / "measurements.csv", rows, list(rows[0]))
    result = build_calibration("prof", "llama3.1-8b", "eagle", "h100-sxm", 1, published=None, profile=path,
                               table=TABLE)
    assert result.theta["target_fixed_ms"] == pytest.approx(TERMS["target_fixed_ms"], abs=1e-6)
    assert result.theta["draft_fixed_ms"] == pytest.approx(TERMS["draft_fixed_ms"], abs=1e-6)
    assert result.calibration.fit_error["profile"]["points"] == 8


def test_alpha_from_acceptance_length_inverts_expected_tokens():
    for alpha in (0.3, 0.634, 0.9):
        assert alpha_from_acceptance_length(expected_tokens(alpha, 3), 3) == pytest.approx(alpha, abs=1e-9)
    assert alpha_from_acceptance_length(2.29, 3) == pytest.approx(0.6338, abs=1e-4)  # vLLM #20780, EAGLE-1


# ---- shipped calibrations ---------------------------------------------------------------------

ISSUE_NAMES = ("llama3.1-8b-eagle-h100", "llama3.1-8b-eagle3-h100", "llama3.1-8b-ngram-h100",
               "llama3.1-8b-draft1b-h100", "llama3-70b-tp4-draft1b-h100", "llama3-70b-tp4-eagle-h100",
               "llama3.1-8b-eagle-a100", "llama3.1-8b-eagle3-a100", "llama3.1-8b-ngram-a100", "llama3.1-8b-draft1b-a100",
               "vicuna-7b-draft160m-a100")


def built_by_the_builder(name: str) -> bool:
    return "build_shipped_calibrations.py" in str(load_calibration(name).provenance.get("command", ""))


SHIPPED_ROOFLINE = [n for n in available_calibrations() if built_by_the_builder(n)]


def test_shipped_roofline_calibrations_exist():
    assert set(ISSUE_NAMES) <= set(SHIPPED_ROOFLINE)
    assert any(n.startswith("llama3-70b-tp4-ngram-h100") for n in SHIPPED_ROOFLINE)


@pytest.mark.parametrize("name", SHIPPED_ROOFLINE)
def test_shipped_calibration_states_sources_errors_and_prices_positive(name):
    cal = load_calibration(name)
    prov = cal.provenance
    assert prov["summary"] and prov["command"].startswith("python benchmarks/build_shipped_calibrations.py")
    assert isinstance(prov["sources"], dict) and prov["efficiencies"] and prov["gpu"]
    assert cal.fit_error and all(isinstance(e["points"], int) and e["points"] > 0 for e in cal.fit_error.values())
    if "-a100" not in name:  # every H100 setting has published serving points
        assert prov["sources"] and any(e.get("role") == "fit" for e in cal.fit_error.values())
    assert cal.batched_tokens_convention == "exact" and cal.step_overhead_ms > 0 and cal.ngram_fraction_of_target > 0
    cost = CostModel(cal)
    times = [cost.step_time_s(uniform_shape(b, b * ctx, k)) for b in (1, 64, 256) for ctx in (0, 4096)
             for k in (0, 1, 3, 7)]
    assert all(t > 0 and np.isfinite(t) for t in times)
    assert cost.step_time_s(uniform_shape(256, 256 * 1024, 0)) > cost.step_time_s(uniform_shape(1, 1024, 0))


# ---- CLI and bad inputs -----------------------------------------------------------------------

def run_cli(argv, capsys) -> tuple[int, str, str]:
    rc = build_cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


BASE = ["--target", "llama3.1-8b", "--proposer", "eagle", "--gpu", "h100-sxm", "--name", "cli-test"]


def test_cli_end_to_end_writes_a_loadable_calibration(tmp_path, capsys):
    out = tmp_path / "cal.json"
    rc, stdout, err = run_cli(BASE + ["--out", str(out), "--points"], capsys)
    assert rc == 0 and err == ""
    cal = load_calibration(out)
    assert cal.name == "cli-test" and "vllm20780_eagle" in cal.fit_error
    assert "vllm20780_eagle" in stdout and "mean |err|" in stdout and "tpot_ms measured 4.29" in stdout
    assert cal.provenance["command"].startswith("build-calibration --target llama3.1-8b")
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_tp_and_gpu_without_vidur_table(tmp_path, capsys):
    out = tmp_path / "cal.json"
    rc, _, err = run_cli(["--target", "llama3-70b", "--proposer", "ngram", "--gpu", "h200", "--tp", "4",
                          "--name", "h200", "--out", str(out), "--published", "none"], capsys)
    assert rc == 0, err
    cal = load_calibration(out)
    assert "transferred from h100-sxm" in cal.provenance["efficiencies"]
    assert cal.memory.gpu_memory_gib == pytest.approx(4 * 141.0) and cal.draft.kind == "fraction"


@pytest.mark.parametrize("change, message", [
    (["--gpu", "h900"], "unknown GPU 'h900' (known: h100-sxm"),
    (["--target", "llama9"], "unknown model 'llama9': neither a registry name ("),
    (["--proposer", "medusa"], "--proposer 'medusa' must be eagle"),
    (["--proposer", "draft:nope"], "--proposer draft:nope: unknown model 'nope'"),
    (["--tp", "0"], "--tp 0 must be in 1..64"),
    (["--published", "/nonexistent.csv"], "--published /nonexistent.csv: no such file"),
    (["--vidur", "/nonexistent"], "--vidur /nonexistent: not a directory"),
    (["--out", "/nonexistent/dir/cal.json"], "directory /nonexistent/dir does not exist"),
])
def test_cli_bad_options_are_one_line(tmp_path, capsys, change, message):
    argv = BASE + ["--out", str(tmp_path / "c.json")]
    for i in range(0, len(change), 2):
        if change[i] in argv:
            argv[argv.index(change[i]) + 1] = change[i + 1]
        else:
            argv += change[i:i + 2]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "c.json").exists()


def test_bad_published_rows_name_file_line_and_column(tmp_path, capsys):
    good = {**{c: "" for c in COLUMNS}, "set": "s", "role": "fit", "target": "llama3.1-8b", "proposer": "eagle",
            "gpu": "h100-sxm", "tp": "1", "batch": "1", "k": "2", "metric": "tpot_ms", "value": "4.3",
            "acceptance_length": "2.1"}
    for bad, message in (({"value": "fast"}, "line 3: column 'value' must be a number"),
                         ({"role": "maybe"}, "line 3: column 'role' must be one of fit"),
                         ({"metric": "tps"}, "line 3: column 'metric' must be one of"),
                         ({"batch": "-1"}, "line 3: column 'batch' must be a whole number"),
                         ({"acceptance_length": "0.5"}, "line 3: column 'acceptance_length' must be >= 1")):
        path = write_csv(tmp_path / "bad.csv", [good, {**good, **bad}])
        with pytest.raises(PublishedError, match="bad.csv: " + message.replace("(", r"\(")):
            read_published(path)
        rc, _, err = run_cli(BASE + ["--out", str(tmp_path / "c.json"), "--published", str(path)], capsys)
        assert rc == 2 and "bad.csv: line 3" in err and err.count("\n") == 1
    (tmp_path / "nocols.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PublishedError, match="missing column 'set'"):
        read_published(tmp_path / "nocols.csv")


def test_bad_profile_csv_is_one_line(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("role,kind,batch\ntarget,decode,1\n")
    rc, _, err = run_cli(BASE + ["--out", str(tmp_path / "c.json"), "--profile", str(tmp_path / "m.csv")], capsys)
    assert rc == 2 and "not a profile-gpu CSV (no column 'query')" in err


def test_built_calibration_json_round_trips_through_the_loader(tmp_path):
    result = build_calibration("rt", "llama3.1-8b", "ngram", "h100-sxm", 1, table=TABLE)
    data = json.loads(json.dumps(result.calibration.to_dict()))
    cal = calibration_from_dict(data, "rt.json")
    assert cal.draft.fraction_of_target == pytest.approx(0.005875)  # SpecDecode-Bench n-gram share
    with pytest.raises(BuildError, match="--tp 65 must be in 1..64"):
        build_calibration("x", "llama3.1-8b", "eagle", "h100-sxm", 65, table=TABLE)


def test_profile_with_draft_rows_for_ngram_is_refused(tmp_path):
    rows = [dict(role=role, model="m", kind="decode", batch=1, query=1, context=8, status="ok", median_ms=1.0)
            for role in ("target", "draft")]
    path = write_csv(tmp_path / "m.csv", rows, list(rows[0]))
    with pytest.raises(BuildError, match="has draft-model rows, but --proposer ngram has no draft forward"):
        build_calibration("x", "llama3.1-8b", "ngram", "h100-sxm", 1, published=None, profile=path, table=TABLE)

"""profile-gpu on CPU with tiny models: end to end, resume, OOM skips, fit recovery, bad options, replay.

Tests that check values use fixed data (or fake timings, `profiler_helpers.fake_timing`, in
test_profiler_inputs.py); the live profiles here only check that a run completes and writes a
loadable calibration, never timing values.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from specdec_sim.profiler import measure, measure_cli as cli  # noqa: E402
from specdec_sim.profiler.measure_fit import Samples, fit_forward, fit_measurements, predict_ms
from specdec_sim.profiler.measure_grid import PRESETS, GridError, build_grid, grid_spec
from specdec_sim.costmodel.architectures import ARCHITECTURES, architecture, model_config  # noqa: E402
from specdec_sim.costmodel import CostModel, ForwardCoefficients, load_calibration, uniform_shape  # noqa: E402

from profiler_helpers import SMALL_GRID, TINY, read_rows  # noqa: E402


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("profile")
    assert cli.main(TINY + SMALL_GRID + ["--out", str(out)]) == 0
    return out


def test_end_to_end_writes_csv_calibration_and_plots(profile_dir):
    rows = read_rows(profile_dir / "measurements.csv")
    spec = grid_spec("quick", "1,2,4", "1,3", "8,32", "16")
    assert {(r["role"], int(r["batch"]), int(r["query"]), int(r["context"])) for r in rows} == \
        {p.key for p in build_grid(spec)}
    assert all(r["status"] == "ok" and float(r["median_ms"]) > 0 for r in rows)
    assert all(r["dtype"] == "fp32" and r["torch"] and r["transformers"] and r["peak_gbs"] == "" for r in rows)
    assert all(float(r["achieved_gbs"]) > 0 and float(r["achieved_tflops"]) > 0 for r in rows)
    assert {r["query"] for r in rows if r["role"] == "draft"} == {"1"}
    cal = load_calibration(profile_dir / "calibration.json")
    assert cal.draft.kind == "sequential" and cal.batched_tokens_convention == "exact"
    assert {"mape_pct", "max_ape_pct", "n_train", "n_test"} <= set(cal.fit_error)
    assert cal.fit_error["n_test"] > 0 and cal.fit_error["mape_pct"] >= 0
    assert cal.memory.kv_bytes_per_token == 2 * 2 * 2 * 32 * 4 + 2 * 1 * 1 * 32 * 4
    assert "profile-gpu" in cal.provenance["command"] and cal.provenance["grid"]["batch_sizes"] == [1, 2, 4]
    assert CostModel(cal).step_time_s(uniform_shape(4, 4 * 64, 3)) > 0
    for name in ("latency_target.png", "latency_draft.png", "measured_vs_predicted.png"):
        assert (profile_dir / name).stat().st_size > 1000


def test_rerun_measures_nothing_and_extension_measures_only_new_points(profile_dir, monkeypatch):
    calls = []
    real = measure.measure_point
    monkeypatch.setattr(measure, "measure_point", lambda *a, **k: calls.append(a[2].key) or real(*a, **k))
    assert cli.main(TINY + SMALL_GRID + ["--out", str(profile_dir)]) == 0
    assert calls == []
    grid = ["--grid", "quick", "--batch-sizes", "1,2,4,6", "--query-tokens", "1,3", "--context-lengths", "8,32",
            "--prefill-chunks", "16"]
    assert cli.main(TINY + grid + ["--out", str(profile_dir)]) == 0
    assert calls and all(key[1] == 6 for key in calls)
    keys = [(r["role"], r["batch"], r["query"], r["context"]) for r in read_rows(profile_dir / "measurements.csv")]
    assert len(keys) == len(set(keys))


def test_interrupted_run_resumes_without_remeasuring(tmp_path, monkeypatch):
    real = measure.measure_point
    calls: list = []

    def interrupt_after_five(*a, **k):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(a[2].key)
        return real(*a, **k)

    monkeypatch.setattr(measure, "measure_point", interrupt_after_five)
    assert cli.main(TINY + SMALL_GRID + ["--out", str(tmp_path)]) == 130
    first = [(r["role"], int(r["batch"]), int(r["query"]), int(r["context"]))
             for r in read_rows(tmp_path / "measurements.csv")]
    assert first == calls and not (tmp_path / "calibration.json").exists()
    resumed: list = []
    monkeypatch.setattr(measure, "measure_point", lambda *a, **k: resumed.append(a[2].key) or real(*a, **k))
    assert cli.main(TINY + SMALL_GRID + ["--out", str(tmp_path)]) == 0
    assert not set(resumed) & set(first)
    assert len(read_rows(tmp_path / "measurements.csv")) == len(first) + len(resumed)
    load_calibration(tmp_path / "calibration.json")


def test_out_of_memory_points_are_skipped_with_reason(tmp_path, monkeypatch, capsys):
    real = measure.time_forward

    def fake_oom(model, batch, query, context, *a, **k):
        if batch * max(1, context) >= 4 * 32:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, batch, query, context, *a, **k)

    monkeypatch.setattr(measure, "time_forward", fake_oom)
    args = [a for a in TINY if a != "--quiet"]
    assert cli.main(args + SMALL_GRID + ["--out", str(tmp_path)]) == 0
    rows = read_rows(tmp_path / "measurements.csv")
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert skipped and all("out of memory" in r["reason"] and r["median_ms"] == "" for r in skipped)
    assert all(int(r["batch"]) * int(r["context"]) >= 128 for r in skipped)
    assert "skipped (out of memory" in capsys.readouterr().out
    assert "skipped" in load_calibration(tmp_path / "calibration.json").description
    monkeypatch.setattr(measure, "time_forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):  # a real bug is not swallowed as a skip
        cli.main(TINY + ["--grid", "quick", "--batch-sizes", "3", "--out", str(tmp_path)])


def synthetic(coef: ForwardCoefficients, seed: int = 0) -> Samples:
    rows = [(b * q, b * c, b, 0.0) for b in (1, 2, 4, 8, 16, 32, 64) for q in (1, 2, 4, 8) for c in (128, 512, 2048)]
    rows += [(b * q, b * c, b, b * q * (c + q / 2)) for b in (1, 2) for q in (128, 512) for c in (0, 512)]
    a = np.array(rows, dtype=float)
    s = Samples(a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.zeros(len(a)))
    return Samples(s.batched, s.kv, s.seqs, s.attn2, predict_ms(coef, s))


def test_fit_recovers_known_coefficients_and_knee():
    true = ForwardCoefficients(fixed_ms=6.5, per_kv_token_ms=5e-5, per_batched_token_ms=2e-3, per_seq_ms=0.03,
                               knee_tokens=64, after_knee_ms=0.02, prefill_attention_ms=1e-7)
    got = fit_forward(synthetic(true))
    assert got.knee_tokens == 64
    for name in ("fixed_ms", "per_kv_token_ms", "per_batched_token_ms", "per_seq_ms", "after_knee_ms",
                 "prefill_attention_ms"):
        assert getattr(got, name) == pytest.approx(getattr(true, name), rel=1e-6), name
    linear = ForwardCoefficients(fixed_ms=1.0, per_kv_token_ms=1e-4, per_batched_token_ms=0.01, per_seq_ms=0.1)
    got = fit_forward(synthetic(linear))
    assert got.after_knee_ms == 0 and got.per_seq_ms == pytest.approx(0.1, rel=1e-6)


def test_fit_drops_collinear_columns_and_reports_holdout_error():
    rows = [{"role": "draft", "kind": "decode", "batch": b, "query": 1, "context": c, "status": "ok",
             "median_ms": 0.5 + 0.01 * b + 1e-5 * b * c} for b in (1, 2, 4, 8, 16) for c in (64, 256, 1024)]
    rows += [{"role": "target", "kind": "verify", "batch": b, "query": q, "context": c, "status": "ok",
              "median_ms": 2 + 0.05 * b * q + 1e-4 * b * c} for b in (1, 4, 16) for q in (1, 4) for c in (64, 512)]
    target, draft, err = fit_measurements(rows, seed=0)
    assert draft.coefficients.per_seq_ms == 0.0  # B == N_batched for query 1: one of them is dropped
    assert draft.coefficients.per_batched_token_ms == pytest.approx(0.01, rel=1e-6)
    assert err["mape_pct"] < 1e-6 and err["n_test"] == 3 + 2 and err["n_train"] == 12 + 10


def test_registry_shapes_and_configs():
    names = set(ARCHITECTURES)
    assert {"llama2-7b", "vicuna-7b", "llama3.1-8b", "llama3.1-70b", "llama3.2-1b", "llama-68m", "llama-160m",
            "qwen2.5-7b", "qwen2.5-0.5b", "tiny-llama", "tiny-draft"} <= names
    assert architecture("llama3.1-8b").params == pytest.approx(8.03e9, rel=0.005)
    assert architecture("llama3.1-70b").params == pytest.approx(70.55e9, rel=0.005)
    assert architecture("llama3.1-8b").kv_bytes_per_token(2) == 131072
    assert architecture("llama-3.1-8b") is architecture("llama3.1-8b")  # the profiler's old spelling: an alias
    from transformers import LlamaConfig, Qwen2Config
    for name in names:
        cfg = {k: v for k, v in model_config(name).items() if not k.startswith("_")}
        built = (Qwen2Config if cfg["model_type"] == "qwen2" else LlamaConfig)(**cfg)
        assert built.num_hidden_layers == cfg["num_hidden_layers"]


def test_grid_presets_and_explicit_lists():
    for preset in PRESETS:
        points = build_grid(grid_spec(preset))
        assert len({p.key for p in points}) == len(points)
        assert all(p.query == 1 for p in points if p.role == "draft")
    spec = grid_spec("standard", "1,4,16", "1,4,8", "128,512", "128,512")
    assert spec.batch_sizes == (1, 4, 16) and spec.prefill_chunks == (128, 512)
    with pytest.raises(GridError, match="--batch-sizes"):
        grid_spec("quick", "1,x")


@pytest.mark.parametrize("argv, needle", [
    (["--target", "no-such-model", "--device", "cpu"], "unknown model 'no-such-model'"),
    (["--target", "tiny-llama", "--draft", "nope"], "tiny-draft"),
    (["--target", "tiny-llama", "--batch-sizes", "1,two"], "--batch-sizes"),
    (["--target", "tiny-llama", "--grid", "huge"], "--grid"),
    (["--device", "cpu"], "--target"),
    (["--target", "tiny-llama", "--threads", "0"], "--threads must be >= 1"),
    (["--target", "tiny-llama", "--seed", "-1"], "--seed must be >= 0"),
    (["--target", "tiny-llama", "--threads", "two"], "--threads: invalid int value"),
])
def test_bad_options_exit_2_with_one_line(argv, needle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(cli.main(argv + ["--out", str(tmp_path / "x")]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["--target", "tiny-llama", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "CUDA is not available" in err and len(err.splitlines()) == 1


def test_replay_executes_steps_and_compares(profile_dir, tmp_path, capsys):
    steps = tmp_path / "steps.csv"
    header = "num_decode,num_prefill,prefill_tokens,verify_tokens,kv_tokens,k_max,step_time_s,draft_s,verify_s,overhead_s"
    lines = [header, "2,0,0,8,64,3,0.01,0.004,0.006,0", "4,1,16,8,100,1,0.02,0.01,0.01,0",
             "0,1,16,0,0,0,0.003,0,0.003,0"] + ["3,0,0,6,96,1,0.01,0.002,0.008,0"] * 7
    steps.write_text("\n".join(lines) + "\n")
    out = tmp_path / "replay.csv"
    cal = str(profile_dir / "calibration.json")
    assert cli.main(TINY + ["--replay", str(steps), "--calibration", cal, "--out", str(out),
                            "--replay-max-steps", "5"]) == 0
    rows = read_rows(out)
    assert [r["row"] for r in rows] == ["2", "4", "6", "9", "11"]  # 5 of 10 steps, evenly (CSV line numbers)
    assert all(float(r["measured_step_s"]) > 0 and float(r["predicted_step_s"]) > 0 for r in rows)
    assert float(rows[0]["measured_draft_s"]) > 0 and float(rows[1]["measured_draft_s"]) == 0  # prefill only
    assert "total: predicted" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("num_decode,kv_tokens\n1,2\n")
    assert cli.main(TINY + ["--replay", str(bad)]) == 2
    assert "missing column(s)" in capsys.readouterr().err


def test_fit_keeps_costs_non_negative_under_noise():
    rng = np.random.default_rng(1)
    true = ForwardCoefficients(fixed_ms=20.0, per_batched_token_ms=0.5, per_seq_ms=0.2)  # no KV cost at all
    s = synthetic(true)
    noisy = Samples(s.batched, s.kv, s.seqs, s.attn2, s.ms * rng.uniform(0.9, 1.1, len(s.ms)))
    got = fit_forward(noisy)
    assert got.per_kv_token_ms >= 0 and got.prefill_attention_ms >= 0 and got.per_batched_token_ms >= 0
    pred = predict_ms(got, noisy)
    assert np.mean(np.abs(pred - noisy.ms) / noisy.ms) < 0.08


def test_resume_refuses_another_model_or_dtype(profile_dir, capsys):
    assert cli.main(TINY + SMALL_GRID + ["--dtype", "bf16", "--out", str(profile_dir)]) == 2
    assert "dtype 'fp32', not 'bf16'" in capsys.readouterr().err
    args = [a if a != "tiny-draft" else "tiny-llama" for a in TINY]
    assert cli.main(args + SMALL_GRID + ["--out", str(profile_dir)]) == 2
    assert "use another --out" in capsys.readouterr().err


def test_nothing_measured_is_an_error_not_a_calibration(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(measure, "time_forward",
                        lambda *a, **k: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("out of memory")))
    grid = ["--grid", "quick", "--batch-sizes", "1,2", "--query-tokens", "1", "--context-lengths", "8",
            "--prefill-chunks", "none"]
    assert cli.main(TINY + grid + ["--out", str(tmp_path)]) == 1
    assert "cannot fit a calibration: only 0 target points" in capsys.readouterr().err
    assert not (tmp_path / "calibration.json").exists() and (tmp_path / "measurements.csv").exists()


def test_replay_reads_the_simulators_parquet_step_log(tmp_path, capsys):
    import pandas as pd
    steps = pd.DataFrame({"num_decode": [2, 1], "num_prefill": [0, 1], "prefill_tokens": [0, 8],
                          "verify_tokens": [6, 3], "kv_tokens": [40, 30], "k_max": [2, 2], "step_time_s": [0.01, 0.02],
                          "draft_s": [0.004, 0.004], "verify_s": [0.006, 0.016], "overhead_s": [0.0, 0.0]})
    path = tmp_path / "steps.parquet"
    steps.to_parquet(path)
    assert cli.main(TINY + ["--replay", str(path), "--out", str(tmp_path)]) == 0
    rows = read_rows(tmp_path / "replay.csv")
    assert [r["row"] for r in rows] == ["0", "1"]
    assert [float(r["predicted_step_s"]) for r in rows] == [0.01, 0.02]  # no calibration: the log's own times
    assert "predictions from the step log" in capsys.readouterr().out


def test_models_that_do_not_fit_are_a_one_line_error(tmp_path, monkeypatch, capsys):
    from specdec_sim.profiler import models as profiler_models

    def too_big(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 140.00 GiB")

    monkeypatch.setattr(profiler_models, "build_model", too_big)
    assert cli.main(TINY + SMALL_GRID + ["--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "do not fit" in err and len(err.splitlines()) == 1


def test_local_model_directory_with_config_json(tmp_path):
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(model_config("tiny-draft")))
    out = tmp_path / "out"
    argv = ["--target", str(model_dir), "--device", "cpu", "--threads", "1", "--warmup", "0", "--repeats", "1",
            "--quiet", "--grid", "quick", "--batch-sizes", "1,2,4", "--query-tokens", "1,2", "--context-lengths",
            "8", "--prefill-chunks", "none", "--out", str(out)]
    assert cli.main(argv) == 0
    cal = load_calibration(out / "calibration.json")
    assert cal.name == "my-model-cpu" and cal.draft.forward is None
    assert {r["model"] for r in read_rows(out / "measurements.csv")} == {"my-model"}


def test_passes_measure_each_point_once_per_pass_and_fit_the_median(tmp_path, monkeypatch):
    grid = ["--grid", "quick", "--batch-sizes", "1,2,4", "--query-tokens", "1,2", "--context-lengths", "8",
            "--prefill-chunks", "none"]
    assert cli.main(TINY + grid + ["--passes", "2", "--out", str(tmp_path)]) == 0
    rows = read_rows(tmp_path / "measurements.csv")
    assert sorted(r["pass_no"] for r in rows) == ["0"] * 9 + ["1"] * 9
    calls: list = []
    real = measure.measure_point
    monkeypatch.setattr(measure, "measure_point", lambda *a, **k: calls.append(a[2].key) or real(*a, **k))
    assert cli.main(TINY + grid + ["--passes", "3", "--out", str(tmp_path)]) == 0
    assert len(calls) == 9  # only the third pass is new
    cal = load_calibration(tmp_path / "calibration.json")
    assert "median of 3 passes" in cal.description and cal.provenance["passes"] == 3
    from specdec_sim.profiler.measure_fit import merge_passes
    merged = merge_passes(read_rows(tmp_path / "measurements.csv"))
    assert len(merged) == 9 and all(m["passes"] == 3 for m in merged)


def test_load_weights_uses_a_local_checkpoint(tmp_path):
    from specdec_sim.profiler.models import build_model
    saved = build_model("tiny-draft", "cpu", "fp32", seed=123)
    saved.save_pretrained(tmp_path)
    loaded = build_model(str(tmp_path), "cpu", "fp32", load_weights=True)
    random = build_model(str(tmp_path), "cpu", "fp32", load_weights=False, seed=0)
    name, param = next(iter(saved.state_dict().items()))
    assert torch.equal(loaded.state_dict()[name], param)
    assert not torch.equal(random.state_dict()["model.layers.0.mlp.up_proj.weight"],
                           saved.state_dict()["model.layers.0.mlp.up_proj.weight"])


def test_live_smoke_simulate_runs_on_a_calibration_the_profiler_wrote(profile_dir):
    """Live timings on a loaded machine can be anything: only check that simulate runs on the result
    (the fixed-fixture version with exact checks is in test_calibration_checks.py)."""
    from specdec_sim.simulator.cli import main as simulate_main

    code = simulate_main(["--trace", "sharegpt", "--max-requests", "5", "--policy", "fixed:2",
                          "--calibration", str(profile_dir / "calibration.json"), "--quiet",
                          "--out", str(profile_dir / "sim")])
    assert code == 0 and (profile_dir / "sim" / "fixed_2" / "summary.json").is_file()


def test_version(capsys):
    import specdec_sim
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"profile-gpu {specdec_sim.__version__}"

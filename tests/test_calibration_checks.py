"""Calibrations are checked on load, exactly, and every profiler fit passes the check (issue 12, item 1).

Malformed files (missing keys, wrong types, NaN, a negative term that makes some step negative)
are refused in one line naming the file; the step-time check over `valid_range` agrees with a
brute-force scan; the bounded profiler fit never yields a refused calibration (hypothesis, random
grids and adversarial timings); `simulate` runs on a calibration fitted from a fixed, real CPU
measurement fixture (tests/fixtures/), so no live timing decides these tests.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import edited_json
from specdec_sim.costmodel import (CALIBRATION_DIR, CalibrationError, CostModel, ForwardCoefficients,
                                   available_calibrations, load_calibration, save_calibration, uniform_shape)
from specdec_sim.costmodel.calibration import calibration_from_dict, check_step_times
from specdec_sim.safe_output import write_text_atomic
from specdec_sim.costmodel.coefficients import ValidRange, lowest_forward
from specdec_sim.profiler.measure_calibration import build_calibration
from specdec_sim.profiler.measure_fit import FIXED_FLOOR_MS, Samples, fit_forward
from specdec_sim.costmodel.architectures import architecture

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MEASURED = FIXTURES / "quick-cpu-measurements.csv"
UNCONSTRAINED = FIXTURES / "quick-cpu-unconstrained-calibration.json"
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def shipped(name: str = "turbospec-llama3-8b-eagle-h100") -> dict:
    return json.loads((CALIBRATION_DIR / f"{name}.json").read_text())


def refused(tmp_path: Path, data: object, name: str = "bad.json") -> str:
    """The one-line CalibrationError that loading `data` (written to tmp_path/name) raises."""
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(CalibrationError) as exc:
        load_calibration(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


def edited(path: str, value) -> dict:
    return edited_json(shipped(), path, value)


# ---- shipped files load, and say where they are valid ---------------------------------------------

def test_shipped_calibrations_and_bundled_profiles_load_with_a_valid_range():
    paths = [CALIBRATION_DIR / f"{n}.json" for n in available_calibrations()]
    paths += sorted((ROOT / "profiles").glob("*.json")) + sorted((ROOT / "profiles").glob("*/calibration.json"))
    assert len(paths) >= 4
    for path in paths:
        cal = load_calibration(path)
        written = json.loads(path.read_text())["valid_range"]
        assert ValidRange(**written) == cal.valid_range, path
        assert cal.valid_range.max_context_tokens == cal.memory.kv_capacity_tokens()


def test_valid_range_defaults_from_the_memory_spec_and_round_trips(tmp_path):
    data = shipped()
    data.pop("valid_range")
    cal = calibration_from_dict(data, "x.json")
    assert cal.valid_range == ValidRange(256, 8192, cal.memory.kv_capacity_tokens(), 64)
    save_calibration(cal, tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["valid_range"]["max_batch_size"] == 256
    assert load_calibration(tmp_path / "c.json") == cal
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temporary file left behind


# ---- malformed files: one line naming the file -----------------------------------------------------

@pytest.mark.parametrize("data, needle", [
    (edited("target", KeyError), "missing key 'target'"),
    (edited("name", KeyError), "missing key 'name'"),
    (edited("target.fixed_ms", KeyError), "missing key 'target.fixed_ms'"),
    (edited("target", [1, 2]), "target must be a JSON object"),
    (edited("target.fixed_ms", "abc"), "target.fixed_ms must be a number, not 'abc'"),
    (edited("target.fixed_ms", True), "target.fixed_ms must be a number"),
    (edited("target.per_kv_token_ms", float("nan")), "target.per_kv_token_ms must be finite"),
    (edited("draft.per_k_ms", float("inf")), "draft.per_k_ms must be finite"),
    (edited("target.warp_factor", 9), "target: unknown key 'warp_factor'"),
    (edited("memory.block_size", 1.5), "memory.block_size must be a whole number"),
    (edited("memory.kv_bytes_per_token", 0), "memory.kv_bytes_per_token must be >= 1"),
    (edited("memory.gpu_memory_utilization", 1.5), "gpu_memory_utilization must be <= 1"),
    (edited("memory", "lots"), "memory must be a JSON object"),
    (edited("description", 3), "description must be a string"),
    (edited("draft.kind", "quantum"), "draft.kind must be sequential, linear or fraction"),
    (edited("valid_range.max_batch_size", 0), "valid_range.max_batch_size must be >= 1"),
    (edited("valid_range.max_k", "7"), "valid_range.max_k must be a number"),
    (edited("format_version", 2), "format_version 2 is not supported"),
    (edited("target.prefill_attention_ms", -1e-9), "target.prefill_attention_ms must be >= 0"),
    (edited("overhead_fraction", -0.1), "overhead_fraction must be >= 0"),
    ("[1, 2]", "not a JSON object"),
    ('{"name": "x", "target": {"fixed_ms": 1', "not readable JSON"),
])
def test_malformed_calibration_is_refused_in_one_line_naming_the_file(tmp_path, data, needle):
    assert needle in refused(tmp_path, data)


def test_binary_calibration_is_refused_in_one_line(tmp_path):
    path = tmp_path / "blob.json"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CalibrationError, match=r"blob\.json: not readable JSON") as exc:
        load_calibration(path)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("path, value, needle", [
    ("target.per_seq_ms", -1.0, "target step time -244.3 ms at batch 256, 256 batched tokens, context 0 KV "
                                "tokens (target.per_seq_ms=-1"),
    ("target.per_batched_token_ms", -0.05, "target step time"),
    ("target.fixed_ms", 0.0, "target step time"),
    ("draft.per_k_ms", -5.0, "draft time"),
    ("overhead_fixed_ms", -100.0, "speculation overhead"),
])
def test_a_negative_term_that_makes_some_step_negative_is_refused_with_the_point(tmp_path, path, value, needle):
    message = refused(tmp_path, edited(path, value))
    assert needle in message and "valid_range: batch 1..256" in message


def test_the_unconstrained_fit_the_profiler_used_to_write_is_refused():
    with pytest.raises(CalibrationError) as exc:
        load_calibration(UNCONSTRAINED)
    assert str(exc.value) == (
        f"{UNCONSTRAINED}: target step time -0.2345 ms at batch 256, 256 batched tokens, context 0 KV tokens "
        "(target.per_seq_ms=-0.01487; valid_range: batch 1..256, batched tokens 1..8192, context 0..16930727, "
        "k 1..64)")


def test_a_narrower_valid_range_accepts_what_the_default_range_refuses(tmp_path):
    data = edited("target.per_seq_ms", -0.1)  # 6.94 + (0.0184 - 0.1) B: negative from B = 86
    refused(tmp_path, data)
    data["valid_range"]["max_batch_size"] = 64
    path = tmp_path / "narrow.json"
    path.write_text(json.dumps(data))
    cal = load_calibration(path)
    cost = CostModel(cal)
    assert cost.step_time_s(uniform_shape(64, 0, 0)) > 0
    with pytest.raises(CalibrationError, match="'turbospec-llama3-8b-eagle-h100': a step of 200 sequences") as exc:
        cost.step_time_s(uniform_shape(200, 0, 0))  # outside the range: a line, not a negative SimPy delay
    assert "keep the engine options inside it" in str(exc.value) and "\n" not in str(exc.value)


def test_simulate_with_a_bad_calibration_prints_one_line_and_exits_2(tmp_path, capsys):
    from specdec_sim.simulator.cli import main as simulate_main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(edited("target.per_seq_ms", -1.0)))
    code = simulate_main(["--trace", "sharegpt", "--max-requests", "5", "--calibration", str(bad), "--quiet",
                          "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(bad) in err and "target step time" in err and "Traceback" not in err


# ---- the check is exact: it agrees with a brute-force scan -----------------------------------------

coefficient = st.floats(-2.0, 2.0, allow_nan=False)


@PROPERTY
@given(fixed=st.floats(-5.0, 20.0), per_kv=st.floats(-1e-3, 1e-3), per_tok=coefficient,
       per_seq=coefficient, spec=coefficient, knee=st.integers(0, 40), after=coefficient,
       b_max=st.integers(1, 12), n_max=st.integers(1, 48), ctx=st.integers(0, 500))
def test_lowest_forward_is_the_minimum_of_a_brute_force_scan(fixed, per_kv, per_tok, per_seq, spec, knee, after,
                                                            b_max, n_max, ctx):
    coef = ForwardCoefficients(fixed, per_kv, per_tok, per_seq, spec, knee, after)
    rng = ValidRange(b_max, n_max, ctx, 8)
    scan = min(coef.forward_ms(n, c, b, s) for b in range(1, min(b_max, n_max) + 1) for n in range(b, n_max + 1)
               for c in (0, ctx) for s in (False, True))
    assert lowest_forward(coef, rng).ms == pytest.approx(scan, abs=1e-9)


# ---- every profiler fit loads ----------------------------------------------------------------------

def fit_rows(batches, queries, contexts, chunks, draw_ms) -> list[dict]:
    rows = []
    for role in ("target", "draft"):
        for b in batches:
            for c in contexts:
                for q in (queries if role == "target" else [1]):
                    rows.append((role, "decode" if q == 1 else "verify", b, q, c))
                for chunk in (chunks if role == "target" else []):
                    rows.append((role, "prefill", b, chunk, c))
    return [{"role": r, "kind": k, "batch": b, "query": q, "context": c, "status": "ok", "device": "fake",
             "median_ms": draw_ms(r, k, b, q, c)} for r, k, b, q, c in dict.fromkeys(rows)]


def sets(values, max_size):
    return st.lists(st.sampled_from(values), min_size=1, max_size=max_size, unique=True)


@settings(PROPERTY, max_examples=60)
@given(batches=sets([1, 2, 3, 4, 8, 16, 64], 4), queries=sets([1, 2, 3, 5, 8], 3), contexts=sets([0, 8, 64, 1024], 3),
       chunks=st.lists(st.sampled_from([16, 128, 512]), max_size=2, unique=True),
       seed=st.integers(0, 2**31 - 1), mode=st.sampled_from(["random", "falling", "linear"]))
def test_every_profiler_fit_makes_a_calibration_that_loads(batches, queries, contexts, chunks, seed, mode):
    """Random grids (including one to four batch sizes) and adversarial timings: random, falling with
    batch, or a linear law with negative terms plus noise. The fit always yields a loadable calibration."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 1, 5) * np.array([2.0, 1e-3, 0.2, 0.5, 1e-6])

    def draw_ms(role, kind, b, q, c):
        if mode == "random":
            return float(10 ** rng.uniform(-3, 4))
        if mode == "falling":
            return float(50.0 / b * rng.uniform(0.5, 1.5))
        value = 1.0 + true[0] + true[1] * b * c + true[2] * b * q + true[3] * b + true[4] * b * q * c
        return float(max(1e-3, value) * rng.uniform(0.8, 1.25))

    assume(len(batches) * len(contexts) * (len(queries) + len(chunks)) >= 6)  # the profiler fits >= 6 points
    rows = fit_rows(batches, queries, contexts, chunks, draw_ms)
    cal = build_calibration(rows, "fit", architecture("tiny-llama"), architecture("tiny-draft"), "fp32", 8.0, {})
    loaded = calibration_from_dict(json.loads(json.dumps(cal.to_dict())), "fit.json")
    for coef in (loaded.target, loaded.draft.forward):
        assert coef.fixed_ms >= FIXED_FLOOR_MS and coef.per_seq_ms >= 0 and coef.per_kv_token_ms >= 0
        assert coef.per_batched_token_ms >= 0 and coef.per_batched_token_ms + coef.after_knee_ms >= -1e-12


@PROPERTY
@given(n=st.integers(2, 12), seed=st.integers(0, 2**31 - 1))
def test_fit_forward_is_non_negative_on_arbitrary_points(n, seed):
    rng = np.random.default_rng(seed)
    b = rng.integers(1, 5, n).astype(float)
    q = rng.integers(1, 9, n).astype(float)
    c = rng.integers(0, 2048, n).astype(float)
    s = Samples(b * q, b * c, b, np.zeros(n), 10 ** rng.uniform(-2, 3, n))
    coef = fit_forward(s)
    low = lowest_forward(coef, ValidRange(4096, 65536, 10**7, 64))
    assert math.isfinite(low.ms) and low.ms >= FIXED_FLOOR_MS * 0.999


# ---- simulate on a calibration fitted from the fixed real measurements -----------------------------

def fixture_rows() -> list[dict]:
    with MEASURED.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_fixture_calibration_fits_and_simulate_runs_on_it(tmp_path):
    from specdec_sim.simulator.cli import main as simulate_main

    rows = fixture_rows()
    assert len(rows) == 38 and {r["device"] for r in rows} == {"CPU x86_64 (2 threads)"}
    cal = build_calibration(rows, "fixture-cpu", architecture("tiny-llama"), architecture("tiny-draft"), "fp32",
                            23.5, {"source": str(MEASURED.name)})
    assert cal.target.per_seq_ms == 0.0  # the unconstrained fit of these rows had -0.0149 here
    path = tmp_path / "calibration.json"
    save_calibration(cal, path)
    assert load_calibration(path) == cal
    assert cal.fit_error["mape_pct"] > 10 and "exceeds 10 %" in cal.fit_error["warning"]
    code = simulate_main(["--trace", "sharegpt", "--max-requests", "20", "--policy", "none", "--policy", "fixed:2",
                          "--calibration", str(path), "--quiet", "--out", str(tmp_path / "sim")])
    assert code == 0
    summary = json.loads((tmp_path / "sim" / "fixed_2" / "summary.json").read_text())
    assert summary["completed"] == 20 and summary["calibration"] == "fixture-cpu"


def test_write_text_atomic_leaves_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "calibration.json"
    path.write_text("old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_text_atomic(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["calibration.json"]


def test_check_step_times_names_a_calibration_built_in_code():
    cal = load_calibration("turbospec-llama3-8b-eagle-h100")
    bad = replace(cal, target=replace(cal.target, per_seq_ms=-1.0))
    with pytest.raises(CalibrationError, match=r"^calibration 'turbospec-llama3-8b-eagle-h100': target step time"):
        check_step_times(bad)

"""Tests for trace loading limits: Parquet, result files, binary input, streaming cuts, hostile values."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specdec_sim.traces import (MAX_TIME_S, MAX_TOKENS, Trace, TraceError, bundled_trace, check_enough, load_trace,
                                synthetic_trace)
from specdec_sim.traces import readers

HEADER = "request_id,arrival_time_s,prompt_tokens,output_tokens\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_line_error(*args: object, **kwargs: object) -> str:
    """load_trace's TraceError message (asserting it is one line)."""
    with pytest.raises(TraceError) as excinfo:
        load_trace(*args, **kwargs)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    return message


def assert_same(a: Trace, b: Trace) -> None:
    for field in ("request_id", "arrival_s", "prompt_tokens", "output_tokens"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


# ---------------------------------------------------------------- Parquet


@pytest.mark.parametrize("name", ["azure-conv", "azure-code", "sharegpt", "sharegpt-lengths"])
def test_parquet_loads_like_csv(tmp_path: Path, name: str) -> None:
    frame = pd.read_csv(bundled_trace(name))
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    assert_same(load_trace(path), load_trace(bundled_trace(name)))
    assert_same(load_trace(path, max_requests=7), load_trace(bundled_trace(name), max_requests=7))


def test_parquet_azure_timestamps_and_mooncake_columns(tmp_path: Path) -> None:
    frame = pd.read_csv(bundled_trace("azure-conv-raw"))
    frame["TIMESTAMP"] = pd.to_datetime(frame["TIMESTAMP"])
    frame.to_parquet(tmp_path / "az.parquet")
    csv_trace = load_trace(bundled_trace("azure-conv-raw"))
    np.testing.assert_allclose(load_trace(tmp_path / "az.parquet").arrival_s, csv_trace.arrival_s, atol=1e-6)
    moon = pd.DataFrame({"timestamp": [0, 1500], "input_length": [5, 7], "output_length": [2, 3]})
    moon.to_parquet(tmp_path / "m.parquet")
    np.testing.assert_array_equal(load_trace(tmp_path / "m.parquet").arrival_s, [0.0, 1.5])


def test_parquet_bad_values_are_named(tmp_path: Path) -> None:
    frame = pd.DataFrame({"arrival_time_s": [0.0, 1.0, 2.0], "prompt_tokens": [5, -1, 5], "output_tokens": [1, 1, 1]})
    frame.to_parquet(tmp_path / "neg.parquet")
    message = one_line_error(tmp_path / "neg.parquet")
    assert "neg.parquet" in message and "row 2" in message and "'prompt_tokens'" in message
    frame = pd.DataFrame({"arrival_time_s": [0.0, None], "prompt_tokens": [5, 5], "output_tokens": [1, 1]})
    frame.to_parquet(tmp_path / "null.parquet")
    assert "row 2, column 'arrival_time_s': empty value" in one_line_error(tmp_path / "null.parquet")


def test_parquet_unknown_columns_and_corrupt_file(tmp_path: Path) -> None:
    pd.DataFrame({"x": [1], "y": [2]}).to_parquet(tmp_path / "xy.parquet")
    message = one_line_error(tmp_path / "xy.parquet")
    assert "'x, y'" in message and "--format" in message and "PAR1" not in message and "fmt=" not in message
    (tmp_path / "bad.parquet").write_bytes(b"PAR1\x15\x00garbage")
    message = one_line_error(tmp_path / "bad.parquet")
    assert "bad.parquet" in message and "Parquet" in message and "\\x" not in message


# ---------------------------------------------------------------- result files and binary input


VLLM_RESULT = {"date": "20250101-000000", "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B-Instruct",
               "num_prompts": 3, "request_rate": "inf", "duration": 1.2, "completed": 3, "request_throughput": 2.5,
               "mean_ttft_ms": 20.0, "input_lens": [10, 20, 30], "output_lens": [5, 6, 7]}
GUIDELLM_REPORT = {"benchmarks": [{"type_": "generative_benchmark", "run_id": "x", "worker": {}, "metrics": {}}]}


@pytest.mark.parametrize("indent", [None, 2])
def test_benchmark_results_are_named(tmp_path: Path, indent: int | None) -> None:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(VLLM_RESULT, indent=indent))
    message = one_line_error(path)
    assert "result.json is a vllm bench serve result, not a trace" in message and "Mooncake" not in message
    assert "vllm bench serve" in one_line_error(path, fmt="mooncake")
    path.write_text(json.dumps(GUIDELLM_REPORT, indent=indent))
    assert "is a GuideLLM benchmark report, not a trace" in one_line_error(path)


@pytest.mark.parametrize("fmt", [None, "normalized", "mooncake"])
def test_dev_zero_fails_fast(fmt: str | None) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    message = one_line_error("/dev/zero", fmt=fmt)
    assert "/dev/zero" in message and "binary content" in message


def test_binary_and_over_long_lines(tmp_path: Path) -> None:
    (tmp_path / "zeros.gz").write_bytes(gzip.compress(b"\x00" * (4 << 20)))
    assert "binary content" in one_line_error(tmp_path / "zeros.gz")
    (tmp_path / "png.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x7f\x05data")
    message = one_line_error(tmp_path / "png.csv")
    assert "not text" in message and "--format" in message
    (tmp_path / "long.csv").write_bytes(b"a" * (3 << 20))
    assert "line 1 is longer than" in one_line_error(tmp_path / "long.csv", fmt="mooncake")
    assert "required column is missing" in one_line_error(tmp_path / "long.csv", fmt="normalized")
    rows = "".join(f"{i},{i},1,1\n" for i in range(5000))
    (tmp_path / "tail.csv").write_bytes((HEADER + rows).encode() + b"x" * (3 << 20))
    assert "line 5002 is longer than" in one_line_error(tmp_path / "tail.csv")
    (tmp_path / "nul.csv").write_bytes((HEADER + rows).encode() + b"\x00")
    assert "line 5002: binary content" in one_line_error(tmp_path / "nul.csv")


# ---------------------------------------------------------------- streaming cuts


def test_cut_stops_reading(tmp_path: Path) -> None:
    """Rows after the cut (and past the parser's read-ahead buffer) are not read: a NUL there does not matter."""
    rows = "".join(f"{i},{i * 0.5},{i + 1},2\n" for i in range(100_000))  # 2 MB
    path = tmp_path / "tail.csv"
    path.write_bytes((HEADER + rows).encode() + b"\x00" * 100)
    assert len(load_trace(path, max_requests=1000)) == 1000
    assert len(load_trace(path, duration_s=10.0)) == 20
    assert "binary content" in one_line_error(path)
    jsonl = "".join(json.dumps({"timestamp": i, "input_length": 1, "output_length": 1}) + "\n" for i in range(50))
    write(tmp_path, "m.jsonl", jsonl + "not json\n")
    assert len(load_trace(tmp_path / "m.jsonl", max_requests=50)) == 50
    assert "line 51" in one_line_error(tmp_path / "m.jsonl")


def test_max_requests_beyond_the_trace_is_detectable() -> None:
    trace = load_trace(bundled_trace("azure-conv-raw"), max_requests=1000)
    assert len(trace) == 300
    with pytest.raises(TraceError) as excinfo:
        check_enough(trace, 1000)
    message = str(excinfo.value)
    assert "\n" not in message and "--max-requests 1000" in message and "(300)" in message and "--rate" in message
    check_enough(trace, 300)
    with pytest.raises(TraceError, match="--num-requests 301"):
        check_enough(trace, 301, option="--num-requests")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(st.floats(0, 1e4), st.integers(1, 50)), min_size=1, max_size=60),
       chunk=st.integers(1, 9), cut=st.integers(1, 70), duration=st.floats(0.5, 2e4), jsonl=st.booleans(),
       ordered=st.booleans())
def test_chunked_reading_matches_one_chunk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rows: list,
                                           chunk: int, cut: int, duration: float, jsonl: bool,
                                           ordered: bool) -> None:
    """Any chunk size gives the same trace; on a sorted file the cuts equal cutting the full trace."""
    rows = sorted(rows) if ordered else rows
    if jsonl:
        text = "".join(json.dumps({"timestamp": t * 1000, "input_length": p, "output_length": 1}) + "\n"
                       for t, p in rows)
    else:
        text = HEADER + "".join(f"{i},{t!r},{p},1\n" for i, (t, p) in enumerate(rows))
    path = write(tmp_path, "t.jsonl" if jsonl else "t.csv", text)
    full, first, window = load_trace(path), load_trace(path, max_requests=cut), load_trace(path, duration_s=duration)
    with monkeypatch.context() as patch:
        patch.setattr(readers, "CHUNK_ROWS", chunk)
        assert_same(load_trace(path), full)
        assert_same(load_trace(path, max_requests=cut), first)
        assert_same(load_trace(path, duration_s=duration), window)
    assert len(first) == min(cut, len(rows)) and (window.arrival_s < duration).all()
    if ordered:
        for field in ("arrival_s", "prompt_tokens"):
            np.testing.assert_array_equal(getattr(first, field), getattr(full, field)[:cut])
        np.testing.assert_array_equal(window.prompt_tokens, full.prompt_tokens[full.arrival_s < duration])


def test_errors_name_rows_across_chunks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(readers, "CHUNK_ROWS", 4)
    rows = [f"{i},{i},1,1\n" for i in range(20)]
    rows[16] = "16,16,0,1\n"
    assert "row 17, column 'prompt_tokens'" in one_line_error(write(tmp_path, "bad.csv", HEADER + "".join(rows)))
    rows[16] = "3,16,1,1\n"
    message = one_line_error(write(tmp_path, "dup.csv", HEADER + "".join(rows)))
    assert "row 17, column 'request_id': duplicate request_id 3 (already used in row 4)" in message
    lines = [json.dumps({"timestamp": i, "input_length": 1, "output_length": 1}) for i in range(12)]
    lines[10] = lines[10].replace('"output_length": 1', '"output_length": 0')
    message = one_line_error(write(tmp_path, "m.jsonl", "\n\n".join(lines) + "\n"))
    assert "line 21, column 'output_length'" in message


# ---------------------------------------------------------------- hostile values


LIMITS = [
    ("time_beyond", HEADER + "0,0,1,1\n1,2e9,1,1\n", None, ["row 2", "'arrival_time_s'", "beyond 1e+09 s"]),
    ("time_huge", HEADER + "0,0,1,1\n1,1e20,1,1\n", None, ["row 2", "'arrival_time_s'", "beyond"]),
    ("time_negative", HEADER + "0,-1e-9,1,1\n", None, ["row 1", "'arrival_time_s'", ">= 0"]),
    ("time_nan", HEADER + "0,NaN,1,1\n", None, ["row 1", "'arrival_time_s'", "NaN"]),
    ("time_inf", HEADER + "0,-inf,1,1\n", None, ["row 1", "'arrival_time_s'", "finite"]),
    ("tokens_absurd", HEADER + "0,0,100000001,1\n", None, ["row 1", "'prompt_tokens'", "too large", "100000000"]),
    ("tokens_inf", HEADER + "0,0,1,inf\n", None, ["row 1", "'output_tokens'", "finite"]),
    ("mc_time", '{"timestamp": 0, "input_length": 1, "output_length": 1}\n'
                '{"timestamp": 1.1e12, "input_length": 1, "output_length": 1}\n', None,
     ["line 2", "'timestamp'", "beyond 1e+12 ms"]),
    ("mc_tokens", '{"timestamp": 0, "input_length": 1e9, "output_length": 1}\n', None,
     ["line 1", "'input_length'", "too large"]),
    ("az_span", "TIMESTAMP,ContextTokens,GeneratedTokens\n2000-01-01 00:00:00,1,1\n2040-01-01 00:00:00,1,1\n",
     None, ["row 2", "'TIMESTAMP'", "beyond 1e+09 s"]),
    ("scaled", HEADER + "0,0,1,1\n1,10,1,1\n", 1e308, ["option time_scale=1e+308", "row 2", "beyond"]),
    ("scaled_just", HEADER + "0,0,1,1\n1,10,1,1\n", 1.5e8, ["option time_scale=1.5e+08", "row 2"]),
]


@pytest.mark.parametrize("case, text, time_scale, parts", LIMITS, ids=[c[0] for c in LIMITS])
def test_hostile_values(tmp_path: Path, case: str, text: str, time_scale: float | None, parts: list[str]) -> None:
    path = write(tmp_path, case + (".jsonl" if text.startswith("{") else ".csv"), text)
    message = one_line_error(path, time_scale=time_scale or 1.0)
    for part in [case] + parts:
        assert part in message, (part, message)


def test_values_at_the_limits_load(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, "edge.csv", HEADER + f"0,0,{MAX_TOKENS},1\n1,{MAX_TIME_S!r},1,1\n"))
    assert trace.arrival_s[-1] == MAX_TIME_S and trace.prompt_tokens[0] == MAX_TOKENS
    assert load_trace(write(tmp_path, "s.csv", HEADER + "0,0,1,1\n1,10,1,1\n"), time_scale=1e8).arrival_s[-1] == 1e9
    with pytest.raises(TraceError, match="beyond"):
        Trace(np.arange(1), np.array([2e9]), np.ones(1), np.ones(1), "direct")
    with pytest.raises(TraceError, match="above"):
        Trace(np.arange(1), np.zeros(1), np.full(1, MAX_TOKENS + 1), np.ones(1), "direct")


@pytest.mark.parametrize("kwargs, parts", [
    ({"rate": 1e-300, "num_requests": 5}, ["rate=1e-300", "num_requests=5", "beyond"]),
    ({"rate": 1e-8, "num_requests": 20}, ["rate=1e-08", "beyond"]),
    ({"rate": 1e-6, "duration_s": 1e10}, ["duration_s=1e+10", "beyond"]),
    ({"rate": 1.0, "num_requests": 10**30}, ["requests", "limit"]),
    ({"rate": float("inf"), "num_requests": 5}, ["rate"]),
    ({"rate": 1e300, "duration_s": 1e300}, ["requests", "limit"]),
])
def test_synthetic_hostile_options(kwargs: dict, parts: list[str]) -> None:
    with pytest.raises(TraceError) as excinfo:
        synthetic_trace(**kwargs)
    message = str(excinfo.value)
    assert "\n" not in message and all(part in message for part in parts), message
    assert len(synthetic_trace(1e-300, num_requests=1)) == 1  # one request spans nothing

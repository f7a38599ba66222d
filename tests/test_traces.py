"""Tests for the traces package: readers, format detection, errors, synthetic traces."""
from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specdec_sim.traces import (BUNDLED_TRACES, FORMATS, Trace, TraceError, bundled_trace, load_trace,
                    synthetic_trace)

NORMALIZED = ["azure-conv", "azure-code", "mooncake-conv", "sharegpt"]
HEADER = "request_id,arrival_time_s,prompt_tokens,output_tokens\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    for part in parts:
        assert part in message, (part, message)
    return message


# ---------------------------------------------------------------- bundled data


@pytest.mark.parametrize("name", sorted(BUNDLED_TRACES))
def test_every_bundled_trace_loads(name: str) -> None:
    path = bundled_trace(name)
    assert path.is_file() and path.name == BUNDLED_TRACES[name]
    trace = load_trace(path)
    assert len(trace) > 0 and trace.arrival_s[0] == 0.0
    assert (np.diff(trace.arrival_s) >= 0).all()
    assert trace.prompt_tokens.min() >= 1 and trace.output_tokens.min() >= 1
    assert trace.source == str(path)


def test_bundled_paths_are_inside_the_package() -> None:
    from specdec_sim import traces

    package_dir = Path(traces.__file__).resolve().parent
    for name in BUNDLED_TRACES:
        assert bundled_trace(name).resolve().parent == package_dir / "data"
    assert (package_dir / "data" / "__init__.py").exists()
    assert (package_dir / "data" / "SOURCE.md").exists()


def test_bundled_accepts_file_name_and_rejects_unknown() -> None:
    assert bundled_trace("azure2023_conv_first30min.csv") == bundled_trace("azure-conv")
    with pytest.raises(TraceError) as excinfo:
        bundled_trace("nope")
    assert_one_line_error(excinfo, "'nope'", *BUNDLED_TRACES)


@pytest.mark.parametrize("name, rows, rate", [("azure-conv", 10108, 5.62), ("azure-code", 5740, 3.21),
                                              ("mooncake-conv", 5719, 3.18), ("sharegpt", 300, 10.3)])
def test_bundled_summary_matches_source_md(name: str, rows: int, rate: float) -> None:
    summary = load_trace(bundled_trace(name)).summary()
    assert summary["requests"] == rows
    assert summary["rate_req_s"] == pytest.approx(rate, abs=0.01)
    assert set(summary) == {"requests", "span_s", "rate_req_s", "prompt_mean", "prompt_p50", "prompt_p99",
                            "output_mean", "output_p50", "output_p99"}


@pytest.mark.parametrize("name", NORMALIZED)
def test_normalized_files_load_exactly(name: str) -> None:
    path = bundled_trace(name)
    frame = pd.read_csv(path)
    trace = load_trace(path)
    np.testing.assert_array_equal(trace.request_id, frame["request_id"].to_numpy())
    np.testing.assert_array_equal(trace.arrival_s, frame["arrival_time_s"].to_numpy())
    np.testing.assert_array_equal(trace.prompt_tokens, frame["prompt_tokens"].to_numpy())
    np.testing.assert_array_equal(trace.output_tokens, frame["output_tokens"].to_numpy())


@pytest.mark.parametrize("raw, twin", [("azure-conv-raw", "azure-conv"), ("mooncake-raw", "mooncake-conv")])
def test_raw_sample_matches_normalized_twin(raw: str, twin: str) -> None:
    sample = load_trace(bundled_trace(raw))
    full = load_trace(bundled_trace(twin))
    n = len(sample)
    assert n == 300
    np.testing.assert_array_equal(sample.request_id, np.arange(n))
    np.testing.assert_array_equal(sample.prompt_tokens, full.prompt_tokens[:n])
    np.testing.assert_array_equal(sample.output_tokens, full.output_tokens[:n])
    np.testing.assert_allclose(sample.arrival_s, full.arrival_s[:n], rtol=0, atol=1e-6)


def test_lengths_only_file() -> None:
    path = bundled_trace("arxiv-lengths")
    frame = pd.read_csv(path)
    for trace in (load_trace(path), load_trace(path, fmt="lengths")):
        assert len(trace) == len(frame) == 28257
        assert (trace.arrival_s == 0).all()
        np.testing.assert_array_equal(trace.prompt_tokens, frame["num_prefill_tokens"].to_numpy())
        np.testing.assert_array_equal(trace.output_tokens, frame["num_decode_tokens"].to_numpy())
    assert math.isnan(trace.summary()["rate_req_s"])


# ---------------------------------------------------------------- detection and options


@pytest.mark.parametrize("name, fmt", [("azure-conv-raw", "azure"), ("mooncake-raw", "mooncake"),
                                       ("sharegpt", "normalized"), ("arxiv-lengths", "lengths")])
def test_detection_is_by_content_not_extension(tmp_path: Path, name: str, fmt: str) -> None:
    text = bundled_trace(name).read_text()
    detected = load_trace(write(tmp_path, "trace.dat", text))
    forced = load_trace(bundled_trace(name), fmt=fmt)
    np.testing.assert_array_equal(detected.prompt_tokens, forced.prompt_tokens)
    np.testing.assert_array_equal(detected.arrival_s, forced.arrival_s)


def test_forced_wrong_format_is_trace_error() -> None:
    with pytest.raises(TraceError) as excinfo:
        load_trace(bundled_trace("sharegpt"), fmt="mooncake")
    assert_one_line_error(excinfo, "sharegpt_llama31_8b_poisson10.csv", "line 1", "not valid JSON")
    with pytest.raises(TraceError) as excinfo:
        load_trace(bundled_trace("mooncake-raw"), fmt="azure")
    assert_one_line_error(excinfo, "mooncake_conversation_sample.raw.jsonl", "column 'TIMESTAMP'")


def test_undetectable_header(tmp_path: Path) -> None:
    with pytest.raises(TraceError) as excinfo:
        load_trace(write(tmp_path, "odd.csv", "a,b,c\n1,2,3\n"))
    assert_one_line_error(excinfo, "odd.csv", "header row", "fmt")


def test_bom_crlf_whitespace_and_gzip(tmp_path: Path) -> None:
    import gzip

    text = "\ufeff request_id , arrival_time_s,prompt_tokens,output_tokens\r\n0, 0.5 ,10,20\r\n1,1.5,11,21\r\n"
    trace = load_trace(write(tmp_path, "bom.csv", text))
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 1.0])
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(text.encode("utf-8")))
    np.testing.assert_array_equal(load_trace(gz).prompt_tokens, [10, 11])


def test_sort_is_stable_and_simultaneous_arrivals_are_kept(tmp_path: Path) -> None:
    rows = [(7, 5.0, 1, 1), (3, 2.0, 2, 2), (9, 2.0, 3, 3), (1, 2.0, 4, 4), (4, 9.0, 5, 5)]
    text = HEADER + "".join(f"{a},{b},{c},{d}\n" for a, b, c, d in rows)
    trace = load_trace(write(tmp_path, "ties.csv", text))
    np.testing.assert_array_equal(trace.request_id, [3, 9, 1, 7, 4])
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 0.0, 0.0, 3.0, 7.0])
    np.testing.assert_array_equal(trace.prompt_tokens, [2, 3, 4, 1, 5])


def test_request_id_is_optional(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, "noid.csv", "arrival_time_s,prompt_tokens,output_tokens\n3,1,1\n1,2,2\n"))
    np.testing.assert_array_equal(trace.request_id, [0, 1])  # numbered in arrival order
    np.testing.assert_array_equal(trace.prompt_tokens, [2, 1])


def test_mooncake_simultaneous_arrivals() -> None:
    trace = load_trace(bundled_trace("mooncake-raw"))
    assert (np.diff(trace.arrival_s) == 0).mean() > 0.5


def test_time_scale_max_requests_duration() -> None:
    path = bundled_trace("azure-conv")
    base = load_trace(path)
    slow = load_trace(path, time_scale=2.0)
    np.testing.assert_allclose(slow.arrival_s, 2.0 * base.arrival_s)
    np.testing.assert_allclose(np.diff(slow.arrival_s), 2.0 * np.diff(base.arrival_s), atol=1e-9)
    first = load_trace(path, max_requests=100)
    assert len(first) == 100
    np.testing.assert_array_equal(first.prompt_tokens, base.prompt_tokens[:100])
    window = load_trace(path, duration_s=60.0)
    assert len(window) == int((base.arrival_s < 60.0).sum()) and window.arrival_s.max() < 60.0
    scaled_window = load_trace(path, time_scale=0.5, duration_s=60.0)
    assert len(scaled_window) == int((base.arrival_s < 120.0).sum())
    both = load_trace(path, duration_s=60.0, max_requests=5)
    assert len(both) == 5
    assert len(load_trace(path, max_requests=10**9)) == len(base)


@pytest.mark.parametrize("option, value", [("time_scale", 0), ("time_scale", -1.0), ("time_scale", float("nan")),
                                           ("time_scale", "2"), ("max_requests", 0), ("max_requests", 1.5),
                                           ("max_requests", True), ("duration_s", 0.0),
                                           ("duration_s", float("inf")), ("fmt", "parquet")])
def test_bad_options_name_the_option(option: str, value: object) -> None:
    with pytest.raises(TraceError) as excinfo:
        load_trace(bundled_trace("sharegpt"), **{option: value})
    assert_one_line_error(excinfo, option)


# ---------------------------------------------------------------- bad input


GOOD_ROW = "0,0.0,10,20\n"
BAD_NORMALIZED = [
    ("missing_column", "request_id,arrival_time_s,output_tokens\n0,0,1\n", ["header row", "'prompt_tokens'", "missing"]),
    ("non_numeric", HEADER + GOOD_ROW + "1,1.0,abc,5\n", ["row 2", "'prompt_tokens'", "not a number", "'abc'"]),
    ("nan", HEADER + GOOD_ROW + "1,nan,3,5\n", ["row 2", "'arrival_time_s'", "NaN"]),
    ("empty_cell", HEADER + GOOD_ROW + GOOD_ROW.replace("0,", "1,", 1) + "2,2.0,,5\n",
     ["row 3", "'prompt_tokens'", "empty"]),
    ("short_row", HEADER + GOOD_ROW + "1,1.0,3\n", ["row 2", "'output_tokens'", "empty"]),
    ("negative_tokens", HEADER + GOOD_ROW + "1,1.0,3,-5\n", ["row 2", "'output_tokens'", ">= 1"]),
    ("zero_tokens", HEADER + GOOD_ROW + "1,1.0,0,5\n", ["row 2", "'prompt_tokens'", ">= 1"]),
    ("fractional_tokens", HEADER + GOOD_ROW + "1,1.0,2.5,5\n", ["row 2", "'prompt_tokens'", "whole number"]),
    ("negative_time", HEADER + GOOD_ROW + "1,-1.0,3,5\n", ["row 2", "'arrival_time_s'", ">= 0"]),
    ("infinite_time", HEADER + GOOD_ROW + "1,inf,3,5\n", ["row 2", "'arrival_time_s'", "finite"]),
    ("huge_tokens", HEADER + GOOD_ROW + "1,1,99999999999999999999,5\n", ["row 2", "'prompt_tokens'", "too large"]),
    ("bad_id", HEADER + GOOD_ROW + "x,1,3,5\n", ["row 2", "'request_id'", "not a number"]),
    ("duplicate_id", HEADER + GOOD_ROW + "1,1,3,5\n0,2,3,5\n", ["row 3", "'request_id'", "duplicate", "row 1"]),
    ("extra_field", HEADER + GOOD_ROW + "1,1,3,5,9\n", ["line 3", "column 5", "malformed"]),
    ("first_bad_row_wins", HEADER + GOOD_ROW + "1,1,3,oops\n2,bad,3,5\n", ["row 2", "'output_tokens'"]),
]


@pytest.mark.parametrize("case, text, parts", BAD_NORMALIZED, ids=[c[0] for c in BAD_NORMALIZED])
def test_bad_normalized_csv(tmp_path: Path, case: str, text: str, parts: list[str]) -> None:
    with pytest.raises(TraceError) as excinfo:
        load_trace(write(tmp_path, f"{case}.csv", text))
    assert_one_line_error(excinfo, f"{case}.csv", *parts)


AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,10,5\n"
BAD_AZURE = [
    ("az_timestamp", AZ + "not-a-time,10,5\n", ["row 2", "'TIMESTAMP'", "timestamp"]),
    ("az_empty_time", AZ + ",10,5\n", ["row 2", "'TIMESTAMP'", "empty"]),
    ("az_zero_tokens", AZ + "2023-11-16 18:17:04.0,10,0\n", ["row 2", "'GeneratedTokens'", ">= 1"]),
    ("az_missing", "TIMESTAMP,ContextTokens\n2023-11-16 18:17:04.0,1\n", ["header row", "'GeneratedTokens'"]),
]


@pytest.mark.parametrize("case, text, parts", BAD_AZURE, ids=[c[0] for c in BAD_AZURE])
def test_bad_azure_csv(tmp_path: Path, case: str, text: str, parts: list[str]) -> None:
    with pytest.raises(TraceError) as excinfo:
        load_trace(write(tmp_path, f"{case}.csv", text), fmt="azure" if case == "az_missing" else None)
    assert_one_line_error(excinfo, f"{case}.csv", *parts)


def test_azure_timestamps(tmp_path: Path) -> None:
    text = ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:05.5000000,3,3\n"
            "2023-11-16 18:17:03.9799600,1,1\n2023-11-16 18:17:04,2,2\n2023-11-16 18:17:05.5,4,4\n")
    trace = load_trace(write(tmp_path, "az.csv", text))
    np.testing.assert_array_equal(trace.prompt_tokens, [1, 2, 3, 4])
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.02004, 1.52004, 1.52004], atol=1e-9)


MC = '{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": [1]}\n'
BAD_MOONCAKE = [
    ("mc_not_json", MC + '{"timestamp": 3, "input_length": 5,\n', ["line 2", "column", "not valid JSON"]),
    ("mc_not_object", MC + "[1, 2, 3]\n", ["line 2", "column 1", "JSON object"]),
    ("mc_missing_key", MC + '{"timestamp": 3, "input_length": 5}\n', ["line 2", "'output_length'", "missing"]),
    ("mc_negative_time", MC + '{"timestamp": -3, "input_length": 5, "output_length": 2}\n',
     ["line 2", "'timestamp'", ">= 0"]),
    ("mc_zero_output", MC + "\n" + '{"timestamp": 3, "input_length": 5, "output_length": 0}\n',
     ["line 3", "'output_length'", ">= 1"]),
    ("mc_null", MC + '{"timestamp": 3, "input_length": null, "output_length": 2}\n', ["line 2", "'input_length'"]),
    ("mc_string", MC + '{"timestamp": 3, "input_length": "many", "output_length": 2}\n',
     ["line 2", "'input_length'", "not a number"]),
    ("mc_bool", MC + '{"timestamp": 3, "input_length": true, "output_length": 2}\n', ["line 2", "'input_length'"]),
    ("mc_nan", MC + '{"timestamp": NaN, "input_length": 4, "output_length": 2}\n', ["line 2", "'timestamp'", "NaN"]),
]


@pytest.mark.parametrize("case, text, parts", BAD_MOONCAKE, ids=[c[0] for c in BAD_MOONCAKE])
def test_bad_mooncake_jsonl(tmp_path: Path, case: str, text: str, parts: list[str]) -> None:
    with pytest.raises(TraceError) as excinfo:
        load_trace(write(tmp_path, f"{case}.jsonl", text))
    assert_one_line_error(excinfo, f"{case}.jsonl", *parts)


def test_mooncake_units_and_blank_lines(tmp_path: Path) -> None:
    text = MC + "\n" + '{"timestamp": 1500, "input_length": 7, "output_length": 3}\n\n'
    trace = load_trace(write(tmp_path, "m.jsonl", text))
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 1.5])
    np.testing.assert_array_equal(trace.prompt_tokens, [5, 7])


@pytest.mark.parametrize("text", ["", "\n\n  \n", HEADER])
def test_empty_files(tmp_path: Path, text: str) -> None:
    with pytest.raises(TraceError) as excinfo:
        load_trace(write(tmp_path, "empty.csv", text))
    assert_one_line_error(excinfo, "empty.csv", "empty")
    with pytest.raises(TraceError) as excinfo:
        load_trace(write(tmp_path, "empty.jsonl", text), fmt="mooncake")
    assert_one_line_error(excinfo, "empty.jsonl")


def test_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(TraceError) as excinfo:
        load_trace(tmp_path / "missing.csv")
    assert_one_line_error(excinfo, "missing.csv", "cannot read")
    with pytest.raises(TraceError) as excinfo:
        load_trace(tmp_path)
    assert_one_line_error(excinfo, str(tmp_path), "cannot read")
    with pytest.raises(TraceError):
        load_trace(12345)  # type: ignore[arg-type]


def test_binary_garbage_is_trace_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.csv"
    path.write_bytes(HEADER.encode() + b"0,0,\xff\xfe,1\n")
    with pytest.raises(TraceError) as excinfo:
        load_trace(path)
    assert_one_line_error(excinfo, "bin.csv", "row 1", "'prompt_tokens'")


def test_trace_error_is_value_error() -> None:
    assert issubclass(TraceError, ValueError)
    assert "\n" not in str(TraceError("a\nb\r\nc"))


def test_large_file_is_fast(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 20_000
    frame = pd.DataFrame({"request_id": np.arange(n), "arrival_time_s": np.sort(rng.uniform(0, 1e4, n)),
                          "prompt_tokens": rng.integers(1, 9000, n), "output_tokens": rng.integers(1, 900, n)})
    good, bad = tmp_path / "big.csv", tmp_path / "bigbad.csv"
    frame.to_csv(good, index=False)
    frame.loc[n - 7, "output_tokens"] = 0
    frame.to_csv(bad, index=False)
    start = time.perf_counter()
    assert len(load_trace(good)) == n
    with pytest.raises(TraceError) as excinfo:
        load_trace(bad)
    elapsed = time.perf_counter() - start
    assert_one_line_error(excinfo, f"row {n - 6}", "'output_tokens'")
    assert elapsed < 2.0


# ---------------------------------------------------------------- hypothesis fuzzing


FUZZ_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
tokens = st.integers(min_value=1, max_value=2**40)
times = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)


@FUZZ_SETTINGS
@given(rows=st.lists(st.tuples(times, tokens, tokens), min_size=1, max_size=40),
       ids=st.lists(st.integers(min_value=-2**62, max_value=2**62), min_size=40, max_size=40, unique=True))
def test_fuzz_valid_normalized_round_trips(tmp_path: Path, rows: list, ids: list) -> None:
    rows = sorted(rows, key=lambda r: r[0])
    start = rows[0][0]
    lines = [HEADER] + [f"{ids[i]},{repr(t)},{p},{o}\n" for i, (t, p, o) in enumerate(rows)]
    path = write(tmp_path, "fuzz.csv", "".join(lines))
    trace = load_trace(path)
    expected_arrival = np.array([t for t, _, _ in rows]) - start
    np.testing.assert_array_equal(trace.arrival_s, expected_arrival)
    np.testing.assert_array_equal(trace.request_id, ids[: len(rows)])
    np.testing.assert_array_equal(trace.prompt_tokens, [p for _, p, _ in rows])
    np.testing.assert_array_equal(trace.output_tokens, [o for _, _, o in rows])
    assert (np.diff(trace.arrival_s) >= 0).all()
    round_trip = tmp_path / "again.csv"
    trace.to_frame().to_csv(round_trip, index=False)
    again = load_trace(round_trip)
    np.testing.assert_array_equal(again.arrival_s, trace.arrival_s)
    np.testing.assert_array_equal(again.request_id, trace.request_id)


@FUZZ_SETTINGS
@given(rows=st.lists(st.tuples(times, tokens, tokens), min_size=1, max_size=30), data=st.data())
def test_fuzz_unsorted_input_comes_out_sorted(tmp_path: Path, rows: list, data: st.DataObject) -> None:
    lines = [HEADER] + [f"{i},{t!r},{p},{o}\n" for i, (t, p, o) in enumerate(rows)]
    trace = load_trace(write(tmp_path, "unsorted.csv", "".join(lines)))
    assert trace.arrival_s[0] == 0 and (np.diff(trace.arrival_s) >= 0).all()
    order = sorted(range(len(rows)), key=lambda i: rows[i][0])  # Python's sort is stable too
    np.testing.assert_array_equal(trace.request_id, order)


cell_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@FUZZ_SETTINGS
@given(cell=cell_text, row=st.integers(0, 4), column=st.integers(0, 3), suffix=st.sampled_from([".csv", ".jsonl"]))
def test_fuzz_any_cell_never_raises_other_errors(tmp_path: Path, cell: str, row: int, column: int,
                                                 suffix: str) -> None:
    table = [["0", "0.0", "10", "20"] for _ in range(5)]
    for i, r in enumerate(table):
        r[0] = str(i)
    table[row][column] = cell
    if suffix == ".csv":
        text = HEADER + "".join(",".join(r) + "\n" for r in table)
    else:
        keys = ["id", "timestamp", "input_length", "output_length"]
        text = "".join("{" + ", ".join(f'"{k}": {v}' for k, v in zip(keys, r)) + "}\n" for r in table)
    try:
        trace = load_trace(write(tmp_path, "garbage" + suffix, text))
    except TraceError as exc:
        assert "\n" not in str(exc) and "garbage" in str(exc)
    else:
        assert isinstance(trace, Trace) and len(trace) >= 1


@FUZZ_SETTINGS
@given(cell=st.text(alphabet="abcxyz!?#%@-. ", min_size=1, max_size=8).filter(lambda s: s.strip() not in
       ("", ".", "-", "-.") and any(c.isalpha() or c in "!?#%@" for c in s)),
       row=st.integers(0, 4), column=st.sampled_from(["arrival_time_s", "prompt_tokens", "output_tokens"]))
def test_fuzz_garbage_token_cell_is_named(tmp_path: Path, cell: str, row: int, column: str) -> None:
    frame = pd.DataFrame({"request_id": range(5), "arrival_time_s": [0.0, 1.0, 2.0, 3.0, 4.0],
                          "prompt_tokens": [5] * 5, "output_tokens": [7] * 5}).astype(object)
    frame.loc[row, column] = cell
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL)
    with pytest.raises(TraceError) as excinfo:
        load_trace(write(tmp_path, "cell.csv", buffer.getvalue()))
    assert_one_line_error(excinfo, "cell.csv", f"row {row + 1}", f"'{column}'")


# ---------------------------------------------------------------- synthetic traces


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_synthetic_rate_and_cv(burstiness: float) -> None:
    n, rate = 200_000, 4.0
    trace = synthetic_trace(rate, num_requests=n, burstiness=burstiness, seed=3)
    gaps = np.diff(trace.arrival_s)
    assert trace.arrival_s[0] == 0.0 and len(trace) == n and (gaps >= 0).all()
    cv = 1.0 / math.sqrt(burstiness)
    standard_error = cv / math.sqrt(n - 1)
    assert abs(gaps.mean() * rate - 1.0) < 5 * standard_error
    assert (gaps.var() / gaps.mean() ** 2) == pytest.approx(1.0 / burstiness, rel=0.05)
    assert trace.summary()["rate_req_s"] == pytest.approx(rate, rel=5 * standard_error)


def test_synthetic_duration_mode() -> None:
    trace = synthetic_trace(10.0, duration_s=500.0, seed=1)
    assert trace.arrival_s.max() < 500.0
    assert abs(len(trace) - 5000) < 5 * math.sqrt(5000)
    tiny = synthetic_trace(0.001, duration_s=1.0)
    assert len(tiny) == 1 and tiny.arrival_s[0] == 0.0


def test_synthetic_seed_determinism_and_fixed_lengths() -> None:
    a = synthetic_trace(2.0, num_requests=1000, burstiness=0.5, seed=7)
    b = synthetic_trace(2.0, num_requests=1000, burstiness=0.5, seed=7)
    c = synthetic_trace(2.0, num_requests=1000, burstiness=0.5, seed=8)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    assert (a.prompt_tokens == 512).all() and (a.output_tokens == 128).all()
    np.testing.assert_array_equal(a.request_id, np.arange(1000))
    assert "gamma" in a.source and "poisson(rate=4)" in synthetic_trace(4.0, num_requests=1).source


def test_synthetic_resampled_lengths_come_from_source() -> None:
    source = load_trace(bundled_trace("sharegpt"))
    trace = synthetic_trace(5.0, num_requests=20_000, lengths_from=source, seed=2)
    pairs = set(zip(source.prompt_tokens.tolist(), source.output_tokens.tolist()))
    drawn = set(zip(trace.prompt_tokens.tolist(), trace.output_tokens.tolist()))
    assert drawn <= pairs and len(drawn) > 0.9 * len(pairs)
    again = synthetic_trace(5.0, num_requests=20_000, lengths_from=source, seed=2)
    np.testing.assert_array_equal(trace.prompt_tokens, again.prompt_tokens)
    arxiv = synthetic_trace(1.0, num_requests=500, lengths_from=load_trace(bundled_trace("arxiv-lengths")))
    assert arxiv.prompt_tokens.min() >= 1


def test_synthetic_million_requests_is_fast() -> None:
    start = time.perf_counter()
    trace = synthetic_trace(50.0, num_requests=1_000_000, burstiness=0.7, seed=0,
                            lengths_from=load_trace(bundled_trace("azure-conv")))
    elapsed = time.perf_counter() - start
    assert len(trace) == 1_000_000 and elapsed < 5.0
    nbytes = sum(getattr(trace, f).nbytes for f in ("request_id", "arrival_s", "prompt_tokens", "output_tokens"))
    assert nbytes <= 40e6


@pytest.mark.parametrize("kwargs, option", [
    ({"rate": 0, "num_requests": 5}, "rate"),
    ({"rate": 1.0}, "num_requests"),
    ({"rate": 1.0, "num_requests": 5, "duration_s": 3.0}, "duration_s"),
    ({"rate": 1.0, "num_requests": 0}, "num_requests"),
    ({"rate": 1.0, "duration_s": -1.0}, "duration_s"),
    ({"rate": 1.0, "num_requests": 5, "burstiness": 0}, "burstiness"),
    ({"rate": 1.0, "num_requests": 5, "prompt_tokens": 0}, "prompt_tokens"),
    ({"rate": 1.0, "num_requests": 5, "output_tokens": 2.5}, "output_tokens"),
    ({"rate": 1.0, "num_requests": 5, "seed": -1}, "seed"),
    ({"rate": 1.0, "num_requests": 5, "lengths_from": [1, 2]}, "lengths_from"),
    ({"rate": 1e9, "duration_s": 1e9}, "requests"),
])
def test_synthetic_bad_options(kwargs: dict, option: str) -> None:
    with pytest.raises(TraceError) as excinfo:
        synthetic_trace(**kwargs)
    assert_one_line_error(excinfo, option)


# ---------------------------------------------------------------- the Trace object


def test_trace_object_basics() -> None:
    trace = load_trace(bundled_trace("sharegpt"), max_requests=3)
    assert len(trace) == 3
    frame = trace.to_frame()
    assert list(frame.columns) == ["request_id", "arrival_time_s", "prompt_tokens", "output_tokens"]
    assert frame["prompt_tokens"].dtype == np.int64 and frame["arrival_time_s"].dtype == np.float64
    with pytest.raises(ValueError):
        trace.arrival_s[0] = 5.0
    with pytest.raises(AttributeError):
        trace.source = "x"  # type: ignore[misc]
    summary = trace.summary()
    assert all(isinstance(v, (int, float)) for v in summary.values())
    json.dumps(summary)
    assert set(FORMATS) == {"normalized", "azure", "mooncake", "lengths"}


def test_trace_constructor_validates() -> None:
    with pytest.raises(TraceError):
        Trace(np.arange(2), np.array([1.0, 0.0]), np.ones(2), np.ones(2), "bad order")
    with pytest.raises(TraceError):
        Trace(np.arange(2), np.zeros(3), np.ones(2), np.ones(2), "bad lengths")
    with pytest.raises(TraceError):
        Trace(np.arange(2), np.zeros(2), np.zeros(2), np.ones(2), "zero tokens")
    empty = Trace(np.arange(0), np.zeros(0), np.ones(0), np.ones(0), "empty")
    assert len(empty) == 0 and empty.summary()["requests"] == 0

"""Tests for reading trace files: bad rows of every format, empty/unreadable/binary files, fuzzing."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import HEADER, assert_one_line_error, python_calls, write
from specdec_sim.traces import MAX_TOKENS, Trace, TraceError, load_trace



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


def test_large_file_is_read_without_a_python_step_per_row(tmp_path: Path) -> None:
    """20,000 rows load (and a bad row deep in them is found) with a few thousand Python calls, whatever the row
    count: counted, not timed, so a loaded machine cannot fail it (it took 0.4-1.6 s, against a 2 s limit, beside
    two CPU burners on 2 cores)."""
    rng = np.random.default_rng(1)
    n = 20_000
    frame = pd.DataFrame({"request_id": np.arange(n), "arrival_time_s": np.sort(rng.uniform(0, 1e4, n)),
                          "prompt_tokens": rng.integers(1, 9000, n), "output_tokens": rng.integers(1, 900, n)})
    good, bad = tmp_path / "big.csv", tmp_path / "bigbad.csv"
    frame.to_csv(good, index=False)
    frame.loc[n - 7, "output_tokens"] = 0
    frame.to_csv(bad, index=False)
    trace, calls = python_calls(load_trace, good)
    assert len(trace) == n and calls < n // 4
    error, bad_calls = python_calls(load_error, bad)
    assert isinstance(error, TraceError) and bad_calls < n // 4
    message = str(error)
    assert "\n" not in message and f"row {n - 6}" in message and "'output_tokens'" in message


def load_error(path: Path) -> TraceError | None:
    """The TraceError loading `path` raises (None if it loads)."""
    try:
        load_trace(path)
    except TraceError as exc:
        return exc
    return None


# ---------------------------------------------------------------- hypothesis fuzzing


FUZZ_SETTINGS = settings(max_examples=60, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
tokens = st.integers(min_value=1, max_value=MAX_TOKENS)
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



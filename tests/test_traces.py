"""Tests for the traces package: bundled data, format detection, options, synthetic traces, Trace.

Bad rows of each format and fuzzing are in test_trace_files.py; Parquet, result files,
streaming and hostile values in test_trace_limits.py.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import HEADER, assert_one_line_error, python_calls, write
from specdec_sim.traces import (BUNDLED_TRACES, FORMATS, Trace, TraceError, bundled_trace, load_trace,
                                synthetic_trace)

NORMALIZED = ["azure-conv", "azure-code", "sharegpt", "sharegpt-300-long-outputs"]


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
                                              ("mooncake-conv", 5719, 3.18), ("sharegpt", 5000, 9.86),
                                              ("sharegpt-300-long-outputs", 300, 10.3)])
def test_bundled_summary_matches_source_md(name: str, rows: int, rate: float) -> None:
    summary = load_trace(bundled_trace(name)).summary()
    assert summary["requests"] == rows
    assert summary["rate_req_s"] == pytest.approx(rate, abs=0.01)
    assert set(summary) == {"requests", "span_s", "rate_req_s", "prompt_mean", "prompt_p50", "prompt_p99",
                            "output_mean", "output_p50", "output_p99"}


@pytest.mark.parametrize("name, rows", [("sharegpt-lengths", 310), ("cnn-lengths", 300), ("gsm8k-lengths", 300),
                                        ("instructcoder-lengths", 500)])
def test_specdecode_bench_lengths_files(name: str, rows: int) -> None:
    trace = load_trace(bundled_trace(name))
    assert len(trace) == rows and (trace.arrival_s == 0).all()
    assert list(pd.read_csv(bundled_trace(name)).columns) == ["prompt_tokens", "output_tokens"]
    resampled = synthetic_trace(4.0, num_requests=50, lengths_from=trace, seed=1)  # as simulate --rate does
    assert len(resampled) == 50 and resampled.arrival_s[-1] > 0


def test_sharegpt_is_resampled_from_the_real_pairs() -> None:
    trace = load_trace(bundled_trace("sharegpt"))
    real = load_trace(bundled_trace("sharegpt-lengths"))
    pairs = set(zip(real.prompt_tokens.tolist(), real.output_tokens.tolist()))
    assert set(zip(trace.prompt_tokens.tolist(), trace.output_tokens.tolist())) <= pairs
    assert len(trace) == 5000 and trace.output_tokens.min() < 100 and np.median(trace.output_tokens) < 700
    gaps = np.diff(trace.arrival_s)
    assert gaps.mean() == pytest.approx(0.1, rel=0.05) and gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)
    old = load_trace(bundled_trace("sharegpt-300-long-outputs"))
    assert len(old) == 300 and old.output_tokens.min() >= 512  # what its name says


@pytest.mark.parametrize("name", NORMALIZED)
def test_normalized_files_load_exactly(name: str) -> None:
    path = bundled_trace(name)
    frame = pd.read_csv(path)
    trace = load_trace(path)
    np.testing.assert_array_equal(trace.request_id, frame["request_id"].to_numpy())
    np.testing.assert_array_equal(trace.arrival_s, frame["arrival_time_s"].to_numpy())
    np.testing.assert_array_equal(trace.prompt_tokens, frame["prompt_tokens"].to_numpy())
    np.testing.assert_array_equal(trace.output_tokens, frame["output_tokens"].to_numpy())


def test_mooncake_conversation_trace_carries_its_block_hashes() -> None:
    """The bundled Mooncake trace is the released JSONL (first 30 min): lengths, ms timestamps and hash_ids."""
    trace = load_trace(bundled_trace("mooncake-conv"))
    assert len(trace) == 5719 and trace.hash_block_tokens == 512
    blocks = -(-trace.prompt_tokens // 512)
    assert all(len(h) == b for h, b in zip(trace.block_hashes, blocks))  # one hash per 512-token prompt block
    assert trace.block_hashes[0][0] == trace.block_hashes[1][0] == 0  # a shared first block (system prompt)


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
        load_trace(bundled_trace("sharegpt-300-long-outputs"), fmt="mooncake")
    assert_one_line_error(excinfo, "sharegpt_llama31_8b_poisson10.csv", "line 1", "not valid JSON")
    with pytest.raises(TraceError) as excinfo:
        load_trace(bundled_trace("mooncake-raw"), fmt="azure")
    assert_one_line_error(excinfo, "mooncake_conversation_sample.raw.jsonl", "column 'TIMESTAMP'")


def test_undetectable_header(tmp_path: Path) -> None:
    with pytest.raises(TraceError) as excinfo:
        load_trace(write(tmp_path, "odd.csv", "a,b,c\n1,2,3\n"))
    assert_one_line_error(excinfo, "odd.csv", "header row", "--format")


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
    source = load_trace(bundled_trace("sharegpt-300-long-outputs"))
    trace = synthetic_trace(5.0, num_requests=20_000, lengths_from=source, seed=2)
    pairs = set(zip(source.prompt_tokens.tolist(), source.output_tokens.tolist()))
    drawn = set(zip(trace.prompt_tokens.tolist(), trace.output_tokens.tolist()))
    assert drawn <= pairs and len(drawn) > 0.9 * len(pairs)
    again = synthetic_trace(5.0, num_requests=20_000, lengths_from=source, seed=2)
    np.testing.assert_array_equal(trace.prompt_tokens, again.prompt_tokens)
    arxiv = synthetic_trace(1.0, num_requests=500, lengths_from=load_trace(bundled_trace("arxiv-lengths")))
    assert arxiv.prompt_tokens.min() >= 1


def test_synthetic_million_requests_take_no_python_step_per_request() -> None:
    """A million synthetic requests are drawn with a bounded number of Python calls (vectorized; counted, not timed:
    a loaded machine cannot fail it) in 40 bytes per request."""
    source = load_trace(bundled_trace("azure-conv"))
    trace, calls = python_calls(synthetic_trace, 50.0, num_requests=1_000_000, burstiness=0.7, seed=0,
                                lengths_from=source)
    assert len(trace) == 1_000_000 and calls < 1_000
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

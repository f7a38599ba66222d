"""Acceptance-trace files: round trips in every format, the hand replay, resumable appends, one-line errors."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from specdec_sim.acceptance.records import (AcceptanceRecord, AcceptanceTraceError, AcceptanceTraceWriter,
                                            append_record, load_acceptance_trace, write_acceptance_trace)
from specdec_sim.acceptance.spans import replay_steps

SPANS = [3, 2, 1, 4, 3, 2, 1, 1, 1]  # 9 output tokens


def records() -> list[AcceptanceRecord]:
    return [AcceptanceRecord("a", 12, 9, SPANS, {"ngram_spans": np.ones(9, dtype=int)}),
            AcceptanceRecord(7, 5, 3, [2, 1, 1], {"ngram_spans": [1, 1, 1]})]


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_replay_by_hand():
    # prefill emits token 0; k=2: spans[0]=3 -> 3 (tokens 1-3); spans[3]=4 capped at 3 (4-6); spans[6]=1; spans[7]=1
    assert replay_steps(SPANS, 2) == [3, 3, 1, 1]
    # k=3: spans[0]=3 -> 3; spans[3]=4 -> 4 (tokens 4-7); spans[7]=1 -> the last token
    assert replay_steps(SPANS, 3) == [3, 4, 1]
    assert replay_steps(SPANS, 0) == [1] * 8  # no speculation: one token per step after the prefill
    assert replay_steps([5], 3) == []  # the prefill's token is the whole output
    assert replay_steps([9, 9, 9], 7) == [2]  # capped by the tokens left


@pytest.mark.parametrize("name", ["t.jsonl", "t.jsonl.gz", "t.parquet"])
def test_round_trip_every_format(tmp_path: Path, name: str):
    path = write_acceptance_trace(tmp_path / name, records())
    back = load_acceptance_trace(path)
    assert [r.id for r in back] == ["a", "7"]  # ids are strings
    assert back[0].spans.tolist() == SPANS and back[0].prompt_tokens == 12 and back[0].output_tokens == 9
    assert back[0].extra["ngram_spans"].tolist() == [1] * 9
    assert not back[0].spans.flags.writeable
    ngram = load_acceptance_trace(path, spans_field="ngram_spans")
    assert ngram[0].spans.tolist() == [1] * 9 and "spans" in ngram[0].extra
    assert not list(tmp_path.glob("*.tmp"))  # atomic: no temp file left


def test_gzip_is_really_gzip(tmp_path: Path):
    path = write_acceptance_trace(tmp_path / "t.jsonl.gz", records())
    with gzip.open(path, "rt") as handle:
        assert json.loads(handle.readline())["id"] == "a"


GOOD = {"id": "x", "prompt_tokens": 4, "output_tokens": 3, "spans": [2, 1, 1]}


@pytest.mark.parametrize("row, parts", [
    ("{not json", ["line 2", "bad JSON"]),
    ({**GOOD, "spans": [2, 0, 1]}, ["line 2", "'spans'[1]", ">= 1"]),
    ({**GOOD, "spans": [2, 1]}, ["line 2", "'spans'", "2 spans", "output_tokens is 3"]),
    ({k: v for k, v in GOOD.items() if k != "prompt_tokens"}, ["line 2", "missing field 'prompt_tokens'"]),
    ({k: v for k, v in GOOD.items() if k != "spans"}, ["line 2", "missing field 'spans'"]),
    ({**GOOD, "output_tokens": 2.5}, ["line 2", "'output_tokens'", "integer"]),
    ({**GOOD, "spans": [2, 1.5, 1]}, ["line 2", "'spans'[1]"]),
    ({**GOOD, "spans": "2,1,1"}, ["line 2", "list of integers"]),
    ({**GOOD, "id": None}, ["line 2", "'id'"]),
    ([1, 2], ["line 2", "JSON object"]),
    ({**GOOD, "id": "first"}, ["record 2", "duplicate id 'first'"]),
])
def test_bad_records_name_file_line_and_field(tmp_path: Path, row, parts):
    path = write_lines(tmp_path / "bad.jsonl", [{**GOOD, "id": "first"}, row])
    with pytest.raises(AcceptanceTraceError) as info:
        load_acceptance_trace(path)
    message = str(info.value)
    assert "\n" not in message and "bad.jsonl" in message
    for part in parts:
        assert part in message


def test_missing_spans_field_lists_the_span_fields(tmp_path: Path):
    path = write_lines(tmp_path / "t.jsonl", [{**GOOD, "eagle_spans": [1, 1, 1]}])
    with pytest.raises(AcceptanceTraceError, match="'ngram_spans'.*spans, eagle_spans"):
        load_acceptance_trace(path, spans_field="ngram_spans")


def test_empty_and_missing_files(tmp_path: Path):
    with pytest.raises(AcceptanceTraceError, match="empty acceptance trace"):
        load_acceptance_trace(write_lines(tmp_path / "e.jsonl", []))
    with pytest.raises(AcceptanceTraceError, match="no such acceptance-trace file"):
        load_acceptance_trace(tmp_path / "nope.jsonl")


def test_parquet_errors_name_the_row(tmp_path: Path):
    bad = [AcceptanceRecord("a", 1, 2, [1, 1])]
    path = write_acceptance_trace(tmp_path / "t.parquet", bad)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path).to_pylist()
    table.append({"id": "b", "prompt_tokens": 1, "output_tokens": 2, "spans": [1, -1]})
    pq.write_table(pa.Table.from_pylist(table), path)
    with pytest.raises(AcceptanceTraceError, match=r"t.parquet: row 2: field 'spans'\[1\]"):
        load_acceptance_trace(path)


def test_writer_appends_and_resumes_after_a_torn_line(tmp_path: Path):
    path = tmp_path / "out.jsonl"
    with AcceptanceTraceWriter(path) as writer:
        writer.append(records()[0])
    with open(path, "a") as handle:
        handle.write('{"id": "torn", "prompt_tok')  # a crash mid-line
    with AcceptanceTraceWriter(path) as writer:
        assert writer.done_ids == {"a"}
        writer.append(records()[1])
    append_record(path, AcceptanceRecord("z", 1, 1, [1]))
    assert [r.id for r in load_acceptance_trace(path)] == ["a", "7", "z"]
    with pytest.raises(AcceptanceTraceError, match="plain .jsonl"):
        AcceptanceTraceWriter(tmp_path / "out.jsonl.gz")


def test_acceptance_traces_are_told_from_request_traces(tmp_path: Path):
    from specdec_sim.acceptance.records import acceptance_request_trace, is_acceptance_trace

    for name in ("t.jsonl", "t.jsonl.gz", "t.parquet"):
        assert is_acceptance_trace(write_acceptance_trace(tmp_path / name, records()))
    mooncake = write_lines(tmp_path / "m.jsonl", [{"timestamp": 0, "input_length": 5, "output_length": 3}])
    csv = tmp_path / "r.csv"
    csv.write_text("arrival_time_s,prompt_tokens,output_tokens\n0,5,3\n")
    assert not any(is_acceptance_trace(p) for p in (mooncake, csv, tmp_path / "missing.jsonl"))
    trace = acceptance_request_trace(tmp_path / "t.jsonl", arrival_s=[0.0, 0.5, 1.0])
    assert trace.acceptance_id.tolist() == ["a", "7", "a"] and trace.output_tokens.tolist() == [9, 3, 9]

"""Acceptance traces: measured per-position spans of real requests, one record per request.

A record is `{"id", "prompt_tokens", "output_tokens", "spans": [...]}` (optionally more span lists
named `<proposer>_spans`, e.g. `eagle_spans`, `ngram_spans`, chosen with `spans_field`), stored as
JSONL, gzipped JSONL (`.jsonl.gz`) or Parquet. `spans[i]` (one per output token i) is how many
tokens the decode step whose last input token is output token i would emit with an unlimited
proposal, bonus token included (1 = the first draft is rejected, or nothing was proposed). The
prefill emits output token 0, so the first decode step uses `spans[0]`; a step using `spans[i]`
with proposal k emits `e = min(spans[i], k + 1, tokens left)` and the next step uses `spans[i + e]`
(the convention of SpecDecode-Bench's simulator, `acc_len[cur_gen_len - 1]`). `replay_steps` is
that rule written out, the reference the simulator's replay is tested against.

Reading checks every record and raises `AcceptanceTraceError` with one line naming the file,
the line (JSONL, 1-based) or row (Parquet, 1-based) and the field. Writing is atomic
(`write_acceptance_trace`) or append-per-record (`AcceptanceTraceWriter`, for resumable output).
See docs/acceptance-traces.md.
"""
from __future__ import annotations

import gzip
import zlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from specdec_sim.safe_output import write_atomic

REQUIRED_FIELDS = ("id", "prompt_tokens", "output_tokens")
MAX_TOKENS = 10**8  # same bound as request traces (traces/model.py)


class AcceptanceTraceError(ValueError):
    """Bad acceptance-trace input: one line naming the file, line/row and field."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


@dataclass(frozen=True, eq=False)
class AcceptanceRecord:
    """One request's measured acceptance: lengths and its span list (int64 numpy array, read-only)."""

    id: str
    prompt_tokens: int
    output_tokens: int
    spans: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # other `<proposer>_spans` lists, by field name

    def __post_init__(self) -> None:
        spans = np.array(self.spans, dtype=np.int64, copy=True)
        spans.setflags(write=False)
        object.__setattr__(self, "spans", spans)
        object.__setattr__(self, "id", str(self.id))

    def to_json(self, spans_field: str = "spans") -> dict:
        out = {"id": self.id, "prompt_tokens": int(self.prompt_tokens), "output_tokens": int(self.output_tokens),
               spans_field: [int(s) for s in self.spans]}
        for name, values in self.extra.items():
            out[name] = [int(s) for s in values]
        return out


def span_fields(record: dict) -> list[str]:
    """The span-list fields of a JSON record: `spans` and every `<proposer>_spans`."""
    return [key for key in record if key == "spans" or key.endswith("_spans")]


def _int_field(record: dict, name: str, where: str, lowest: int) -> int:
    if name not in record:
        raise AcceptanceTraceError(f"{where}: missing field '{name}'")
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise AcceptanceTraceError(f"{where}: field '{name}' must be an integer, got {value!r}")
    if not lowest <= int(value) <= MAX_TOKENS:
        raise AcceptanceTraceError(f"{where}: field '{name}' must be in {lowest}..{MAX_TOKENS}, got {value!r}")
    return int(value)


def _span_array(values, name: str, where: str, output_tokens: int) -> np.ndarray:
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise AcceptanceTraceError(f"{where}: field '{name}' must be a list of integers, got {type(values).__name__}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise AcceptanceTraceError(f"{where}: field '{name}' must be a list of integers") from None
    if array.ndim != 1:
        raise AcceptanceTraceError(f"{where}: field '{name}' must be a flat list of integers")
    if len(array) != output_tokens:
        raise AcceptanceTraceError(f"{where}: field '{name}' has {len(array)} spans, output_tokens is {output_tokens}")
    bad = np.flatnonzero(~np.isfinite(array) | (array != np.round(array)) | (array < 1))
    if bad.size:
        i = int(bad[0])
        raise AcceptanceTraceError(f"{where}: field '{name}'[{i}] must be an integer >= 1, got {values[i]!r}")
    return array.astype(np.int64)


def check_record_id(record: object, where: str, error: type[Exception]) -> None:
    """A JSON line of records (acceptance traces, measure-acceptance's prompts) is an object with an 'id' that
    is a string or an integer; otherwise `error` names the line."""
    if not isinstance(record, dict):
        raise error(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "id" not in record:
        raise error(f"{where}: missing field 'id'")
    if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
        raise error(f"{where}: field 'id' must be a string or an integer, got {record['id']!r}")


def record_from_json(record: object, where: str, spans_field: str = "spans") -> AcceptanceRecord:
    """Check one decoded record; `where` is 'file:line N' for messages."""
    check_record_id(record, where, AcceptanceTraceError)
    prompt = _int_field(record, "prompt_tokens", where, 0)
    output = _int_field(record, "output_tokens", where, 1)
    if record.get(spans_field) is None:
        found = ", ".join(span_fields(record)) or "none"
        raise AcceptanceTraceError(f"{where}: missing field '{spans_field}' (span fields here: {found})")
    spans = _span_array(record[spans_field], spans_field, where, output)
    extra = {name: _span_array(record[name], name, where, output) for name in span_fields(record)
             if name != spans_field and record[name] is not None}
    return AcceptanceRecord(record["id"], prompt, output, spans, extra)


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def json_lines(path: Path, error: type[Exception], label: str = "") -> Iterator[tuple[int, str, object]]:
    """(line number, "PATH: line N", decoded value) of every non-blank line of a JSONL or .jsonl.gz file; bad JSON
    and unreadable or damaged files raise `error` in one line (`label` prefixes the path, e.g. an option)."""
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{path}: line {number}"
                try:
                    decoded = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise error(f"{where}: bad JSON ({exc.msg} at column {exc.colno})") from None
                yield number, where, decoded
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:  # zlib: a damaged .gz stream
        raise error(f"{label}{path}: cannot read: {exc}") from None


def _jsonl_records(path: Path, spans_field: str) -> Iterator[AcceptanceRecord]:
    for _, where, decoded in json_lines(path, AcceptanceTraceError):
        yield record_from_json(decoded, where, spans_field)


def _parquet_records(path: Path, spans_field: str) -> Iterator[AcceptanceRecord]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise AcceptanceTraceError(f"{path}: cannot read Parquet: {exc}") from None
    for number, row in enumerate(table.to_pylist(), 1):
        yield record_from_json(row, f"{path}: row {number}", spans_field)


def iter_acceptance_trace(path: str | os.PathLike, spans_field: str = "spans") -> Iterator[AcceptanceRecord]:
    """Records of a JSONL, JSONL.gz or Parquet acceptance trace, checked one by one."""
    path = Path(path)
    if not path.is_file():
        raise AcceptanceTraceError(f"{path}: no such acceptance-trace file")
    if path.suffix == ".parquet":
        return _parquet_records(path, spans_field)
    return _jsonl_records(path, spans_field)


def load_acceptance_trace(path: str | os.PathLike, spans_field: str = "spans") -> list[AcceptanceRecord]:
    """All records of an acceptance trace; duplicate ids and empty files are errors."""
    records, seen = [], {}
    for number, rec in enumerate(iter_acceptance_trace(path, spans_field), 1):
        if rec.id in seen:
            raise AcceptanceTraceError(f"{path}: record {number}: duplicate id {rec.id!r} (first in record "
                                       f"{seen[rec.id]})")
        seen[rec.id] = number
        records.append(rec)
    if not records:
        raise AcceptanceTraceError(f"{path}: empty acceptance trace (no records)")
    return records


def _json_lines(records: Iterable[AcceptanceRecord], spans_field: str) -> Iterator[str]:
    for rec in records:
        yield json.dumps(rec.to_json(spans_field), separators=(",", ":")) + "\n"


def write_acceptance_trace(path: str | os.PathLike, records: Iterable[AcceptanceRecord],
                           spans_field: str = "spans") -> Path:
    """Write all records atomically (temp file + os.replace); format from the suffix (.jsonl, .jsonl.gz, .parquet)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist([r.to_json(spans_field) for r in records]), tmp)
        else:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(tmp, "wt", encoding="utf-8") as handle:
                handle.writelines(_json_lines(records, spans_field))

    write_atomic(path, write)
    return path


class AcceptanceTraceWriter:
    """Append one record per line to a JSONL trace, flushed per record, for resumable output.

    Opening an existing file keeps its complete records (`done_ids`) and drops a torn last line
    (a crash mid-write), so a restarted job skips what is done and appends the rest."""

    def __init__(self, path: str | os.PathLike, spans_field: str = "spans"):
        self.path = Path(path)
        if self.path.suffix == ".gz":
            raise AcceptanceTraceError(f"{self.path}: append output must be plain .jsonl (gzip it when done)")
        self.spans_field = spans_field
        self.done_ids: set[str] = self._recover()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")

    def _recover(self) -> set[str]:
        if not self.path.exists():
            return set()
        data = self.path.read_bytes()
        keep = data[:data.rfind(b"\n") + 1]  # a last line without newline was torn by a crash
        if len(keep) != len(data):
            with open(self.path, "wb") as handle:
                handle.write(keep)
        return {rec.id for rec in _jsonl_records(self.path, self.spans_field)} if keep.strip() else set()

    def append(self, record: AcceptanceRecord) -> None:
        self._handle.write(json.dumps(record.to_json(self.spans_field), separators=(",", ":")) + "\n")
        self._handle.flush()
        self.done_ids.add(record.id)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "AcceptanceTraceWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_acceptance_trace(path: str | os.PathLike) -> bool:
    """Whether `path` is an acceptance trace: a .jsonl/.jsonl.gz/.parquet file whose first record has
    `output_tokens` and a span list (`spans` or `<proposer>_spans`). Never raises."""
    path = Path(path)
    name = path.name.lower()
    if not path.is_file() or not name.endswith((".jsonl", ".jsonl.gz", ".parquet")):
        return False
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            keys = list(pq.read_schema(path).names)
        else:
            with _open_text(path) as handle:
                first = next((line for line in handle if line.strip()), "")
            record = json.loads(first) if first else {}
            keys = list(record) if isinstance(record, dict) else []
    except (OSError, ValueError, EOFError, UnicodeDecodeError):
        return False
    return "output_tokens" in keys and bool(span_fields(dict.fromkeys(keys)))


def acceptance_request_trace(path: str | os.PathLike, arrival_s: Sequence[float] | None = None,
                             spans_field: str | None = None):
    """A request trace made of an acceptance trace's records: request i is record i mod n (lengths from the
    record, `acceptance_id` its id), arriving at `arrival_s[i]` (default: all at 0, as many as records)."""
    from specdec_sim.traces.model import Trace

    field_name = spans_field or _first_span_field(path)
    records = load_acceptance_trace(path, field_name)
    count = len(records) if arrival_s is None else len(arrival_s)
    arrivals = np.zeros(count) if arrival_s is None else np.asarray(arrival_s, dtype=float)
    rows = [records[i % len(records)] for i in range(count)]
    return Trace(np.arange(count), arrivals, [r.prompt_tokens or 1 for r in rows], [r.output_tokens for r in rows],
                 str(path), [r.id for r in rows])


def _first_span_field(path: str | os.PathLike) -> str:
    """`spans` if the first record has it, else its first `<proposer>_spans` (lengths are all a request trace
    takes from the records)."""
    first = next(iter_acceptance_trace_raw(path), {})
    fields = span_fields(first)
    return "spans" if "spans" in fields or not fields else fields[0]


def iter_acceptance_trace_raw(path: str | os.PathLike) -> Iterator[dict]:
    """The decoded records, unchecked (used to see which fields a file has)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).slice(0, 1).to_pylist()
        return
    with _open_text(path) as handle:
        for line in handle:
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    return
                return


def append_record(path: str | os.PathLike, record: AcceptanceRecord, spans_field: str = "spans") -> None:
    """Append one record to a JSONL trace (opens, writes one line, flushes, closes)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record.to_json(spans_field), separators=(",", ":")) + "\n")


__all__ = ["AcceptanceRecord", "AcceptanceTraceError", "AcceptanceTraceWriter", "acceptance_request_trace",
           "append_record", "check_record_id", "is_acceptance_trace",
           "iter_acceptance_trace", "load_acceptance_trace", "record_from_json", "replay_steps",
           "write_acceptance_trace"]

"""Load request traces from files: normalized CSV, Azure 2023 CSV, Mooncake JSONL, lengths-only CSV, Parquet.

The format is detected from the header columns (or a first line starting with
``{`` for JSONL; Parquet by its magic bytes and column names) unless ``fmt``
forces one. Files are read in chunks and reading stops once ``max_requests``
rows (or the ``duration_s`` window) are in, so memory is proportional to the
requests kept. Every problem with the file or the options raises a one-line
:class:`~traces.model.TraceError` naming the file, the row and the column;
nothing here lets another exception escape for bad input.
"""
from __future__ import annotations

import csv
import math
import numbers
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from specdec_sim.traces.columns import (Kind, Table, check_unique_ids, numeric, raise_first_bad, require_columns, shown,
                                        timestamps_ns)
from specdec_sim.traces.model import MAX_TIME_S, Trace, TraceError
from specdec_sim.traces.sources import CHUNK_ROWS, Tables, csv_tables, jsonl_tables, parquet_columns, parquet_tables
from specdec_sim.traces.stream import Opened, head_text, not_a_trace, open_trace

FORMATS = ("normalized", "azure", "mooncake", "lengths")
NORMALIZED_COLUMNS = ["arrival_time_s", "prompt_tokens", "output_tokens"]  # request_id is optional
OPTIONAL_NORMALIZED = ["request_id", "acceptance_id", "max_tokens"]  # read when the header has them
AZURE_COLUMNS = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
MOONCAKE_KEYS = ["timestamp", "input_length", "output_length"]
MOONCAKE_HASH_TOKENS = 512  # tokens per hash_ids block (Mooncake traces' README)
LENGTHS_COLUMNS = ["num_prefill_tokens", "num_decode_tokens"]  # Vidur processed traces
PAIR_COLUMNS = ["prompt_tokens", "output_tokens"]  # lengths-only files without arrival_time_s


@dataclass(frozen=True)
class Parsed:
    """Checked columns of a file (or of one chunk), in file order, before sorting and cutting."""

    arrival_s: np.ndarray  # raw arrival values in the format's unit until `_collect` converts them
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    request_id: np.ndarray | None  # None: number the requests 0..n-1 in arrival order
    rows: Table | None = None  # names each row in messages (whole-file numbering)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # optional per-request columns (OPTIONAL_FIELDS)


# Optional per-request columns a format may carry, as the Trace fields they become: the normalized
# format's `acceptance_id` (the acceptance-trace record each request replays) and `max_tokens` (what the
# client asked for), Mooncake's `hash_ids` (the prompt's 512-token block hashes, for prefix caching).
OPTIONAL_FIELDS = ("acceptance_id", "max_tokens", "block_hashes")


@dataclass(frozen=True)
class Schema:
    """How one format's chunks are checked and how its raw arrival values become seconds."""

    check: Callable[[Table], Parsed]
    seconds_per_unit: float  # raw arrival unit in seconds (for the early stop on duration_s)
    to_seconds: Callable[[np.ndarray], np.ndarray]  # all raw arrivals -> seconds
    time_column: str | None  # named in messages about arrival times


def load_trace(path: str | os.PathLike, fmt: str | None = None, time_scale: float = 1.0,
               max_requests: int | None = None, duration_s: float | None = None) -> Trace:
    """Read a trace file, sort it by arrival (stable) and shift the first arrival to 0.

    ``fmt`` is None/"auto" (detect) or one of ``FORMATS``. ``time_scale``
    multiplies inter-arrival times (2.0 halves the rate), ``max_requests`` keeps
    the first N requests and ``duration_s`` keeps arrivals < duration_s (after scaling).
    Both cuts read the file in order and stop early: rows after the cut are not read,
    so in a file that is not sorted by arrival they are cut in file order. A shorter
    file gives fewer requests: see :func:`~traces.model.check_enough`.
    """
    fmt = _check_options(fmt, time_scale, max_requests, duration_s)
    name = _display_name(path)
    opened = open_trace(path, name)
    tables = None
    try:
        fmt, tables = _tables(opened, path, name, fmt, min(CHUNK_ROWS, max_requests or CHUNK_ROWS))
        parsed = _collect(tables, SCHEMAS[fmt], name, float(time_scale), max_requests, duration_s)
    finally:
        if tables is not None:
            tables.close()  # the reader first, then the file under it
        opened.close()
    return _finish(parsed, name, float(time_scale), max_requests, duration_s)


def _tables(opened: Opened, path: str | os.PathLike, name: str, fmt: str | None,
            chunk_rows: int) -> tuple[str, Tables]:
    """The format and the file's chunks of raw cells."""
    if opened.kind == "parquet":
        columns = parquet_columns(path, name)
        fmt = fmt or detect_columns(columns, name, ", ".join(columns))
        return fmt, parquet_tables(path, name, required_columns(fmt, columns), chunk_rows)
    text = head_text(opened.head)
    result = not_a_trace(text, name)
    if result is not None:
        raise result
    if not _first_line(text):
        raise TraceError(f"{name}: empty file (no header and no rows)")
    fmt = fmt or detect_format(text, name)
    assert opened.stream is not None
    if fmt == "mooncake":
        return fmt, jsonl_tables(opened.stream, name, MOONCAKE_KEYS, chunk_rows)
    header = _header(text)
    required = required_columns(fmt, header)
    require_columns(name, "header row", header, required)
    return fmt, csv_tables(opened.stream, name, required, chunk_rows)


def _collect(tables: Iterator[Table], schema: Schema, name: str, time_scale: float, max_requests: int | None,
             duration_s: float | None) -> Parsed:
    """Check chunk by chunk until the cut; arrivals converted to seconds and range-checked.

    The cut is in file order: the first ``max_requests`` rows, or the rows before the first
    one that arrives ``duration_s`` (scaled) or more after the earliest arrival before it.
    """
    parts: list[Parsed] = []
    kept, earliest = 0, None
    for table in tables:
        if max_requests is not None:
            table = table.head(max_requests - kept)
        part = schema.check(table)
        stop = max_requests is not None and kept + len(part.prompt_tokens) >= max_requests
        if duration_s is not None:
            running = np.minimum.accumulate(part.arrival_s)
            if earliest is not None:
                running = np.minimum(running, earliest)
            earliest = running[-1]
            with np.errstate(over="ignore"):
                past = (part.arrival_s - running) * schema.seconds_per_unit * time_scale >= duration_s
            if past.any():
                part, stop = _head(part, int(np.argmax(past))), True
        parts.append(part)
        kept += len(part.prompt_tokens)
        if stop:
            break
    parsed = _concatenate(parts, name)  # never empty: the first row is never past the window
    arrival = schema.to_seconds(parsed.arrival_s)
    _check_time_range(parsed, arrival, schema, name, time_scale)
    return Parsed(arrival, parsed.prompt_tokens, parsed.output_tokens, parsed.request_id, parsed.rows,
                  parsed.extras)


def _head(part: Parsed, rows: int) -> Parsed:
    """The first ``rows`` rows of a checked chunk."""
    ids = None if part.request_id is None else part.request_id[:rows]
    table = None if part.rows is None else part.rows.head(rows)
    extras = {key: values[:rows] for key, values in part.extras.items()}
    return Parsed(part.arrival_s[:rows], part.prompt_tokens[:rows], part.output_tokens[:rows], ids, table, extras)


def _concatenate(parts: list[Parsed], name: str) -> Parsed:
    """One Parsed from the chunks; request ids checked for duplicates over all of them."""
    def joined(field: str) -> np.ndarray:
        return np.concatenate([getattr(part, field) for part in parts])

    lines = [part.rows.line_numbers for part in parts if part.rows is not None and part.rows.line_numbers is not None]
    rows = Table(name, pd.DataFrame(), np.concatenate(lines) if lines else None)
    ids = joined("request_id") if parts[0].request_id is not None else None
    if ids is not None:
        check_unique_ids(rows, "request_id", ids)
    extras = {}
    for key in parts[0].extras:  # a column only some chunks have (JSONL keys) is dropped
        if all(key in part.extras for part in parts):
            extras[key] = np.concatenate([part.extras[key] for part in parts])
    return Parsed(joined("arrival_s"), joined("prompt_tokens"), joined("output_tokens"), ids, rows, extras)


def _check_time_range(parsed: Parsed, arrival: np.ndarray, schema: Schema, name: str, time_scale: float) -> None:
    """Arrivals (after the shift to 0 and ``time_scale``) must stay within MAX_TIME_S."""
    relative = arrival - arrival.min()
    assert parsed.rows is not None
    if relative.max() > MAX_TIME_S:
        index = int(np.argmax(relative > MAX_TIME_S))
        raise parsed.rows.cell_error(index, schema.time_column or "?", f"arrival {relative[index]:.4g} s after the "
                                     f"earliest is beyond {MAX_TIME_S:g} s (float seconds lose microsecond "
                                     f"resolution)")
    with np.errstate(over="ignore"):
        scaled = relative * time_scale
    if scaled.max() > MAX_TIME_S:
        index = int(np.argmax(scaled > MAX_TIME_S))
        raise TraceError(f"{name}: option time_scale={time_scale:g} puts {parsed.rows.row_label(index)} at "
                         f"{scaled[index]:.4g} s, beyond {MAX_TIME_S:g} s (float seconds lose microsecond "
                         f"resolution)")


def _display_name(path: object) -> str:
    try:
        return os.fspath(path)  # type: ignore[arg-type]
    except TypeError:
        raise TraceError(f"trace path must be a str or os.PathLike, got {type(path).__name__}") from None


def _check_options(fmt: str | None, time_scale: float, max_requests: int | None,
                   duration_s: float | None) -> str | None:
    """Validate load_trace's options; return fmt with 'auto' mapped to None."""
    if fmt is not None and fmt != "auto" and fmt not in FORMATS:
        raise TraceError(f"option fmt must be one of {', '.join(FORMATS)} (or None to detect), got {fmt!r}")
    positive_number("time_scale", time_scale)
    if max_requests is not None:
        positive_int("max_requests", max_requests)
    if duration_s is not None:
        positive_number("duration_s", duration_s)
    return None if fmt == "auto" else fmt


def positive_number(option: str, value: object) -> float:
    """A finite real number > 0, or TraceError naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise TraceError(f"option {option} must be a finite number > 0, got {value!r}")
    return float(value)


def positive_int(option: str, value: object) -> int:
    """A whole number >= 1, or TraceError naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise TraceError(f"option {option} must be an integer >= 1, got {value!r}")
    return int(value)


def _first_line(text: str) -> str:
    for line in text.split("\n"):
        if line.strip():
            return line.strip()
    return ""


def _header(text: str) -> list[str]:
    """The stripped CSV header cells of the first non-blank line."""
    try:
        return [cell.strip() for cell in next(csv.reader([_first_line(text)]))]
    except (csv.Error, StopIteration):
        return []


_EXPECTED = ("expected normalized (request_id,arrival_time_s,prompt_tokens,output_tokens), Azure "
             "(TIMESTAMP,ContextTokens,GeneratedTokens), Mooncake JSONL, lengths (prompt_tokens,output_tokens "
             "or num_prefill_tokens,num_decode_tokens) or Parquet with one of these column sets; "
             "pass --format to force one")


def detect_format(text: str, name: str = "<trace>") -> str:
    """Guess the format from the first non-blank line of ``text``."""
    first = _first_line(text)
    if not first:
        raise TraceError(f"{name}: empty file (no header and no rows)")
    if first.startswith("{"):
        return "mooncake"
    if not first.isprintable() or "\ufffd" in first:
        raise TraceError(f"{name}: header row: the first line is not text (a binary file?), so the trace "
                         f"format cannot be detected; {_EXPECTED}")
    return detect_columns(_header(text), name, first)


def detect_columns(columns: list[str], name: str, shown_text: str) -> str:
    """The format whose required columns are in ``columns``."""
    header = set(columns)
    if set(AZURE_COLUMNS) <= header:
        return "azure"
    if set(MOONCAKE_KEYS) <= header:
        return "mooncake"
    if set(PAIR_COLUMNS) <= header and "arrival_time_s" not in header:
        return "lengths"
    if header & set(NORMALIZED_COLUMNS + ["request_id"]):
        return "normalized"
    if set(LENGTHS_COLUMNS) <= header:
        return "lengths"
    raise TraceError(f"{name}: header row: cannot detect the trace format from columns "
                     f"{shown(shown_text, 80)}; {_EXPECTED}")


def required_columns(fmt: str, header: list[str]) -> list[str]:
    """The columns ``fmt`` reads from a file with ``header``."""
    if fmt == "lengths":
        return PAIR_COLUMNS if set(PAIR_COLUMNS) <= set(header) else LENGTHS_COLUMNS
    optional = [c for c in OPTIONAL_NORMALIZED if c in header] if fmt == "normalized" else []
    return optional + {"normalized": NORMALIZED_COLUMNS, "azure": AZURE_COLUMNS, "mooncake": MOONCAKE_KEYS}[fmt]


def _check_normalized(table: Table) -> Parsed:
    checks = [numeric(table, "arrival_time_s", Kind.TIME, MAX_TIME_S, "s"),
              numeric(table, "prompt_tokens", Kind.TOKENS), numeric(table, "output_tokens", Kind.TOKENS)]
    if "request_id" in table.frame.columns:
        checks.insert(0, numeric(table, "request_id", Kind.ID))
    if "max_tokens" in table.frame.columns:
        checks.append(numeric(table, "max_tokens", Kind.TOKENS))
    raise_first_bad(table, checks)
    values = {check.column: check.values for check in checks}
    extras = {"acceptance_id": _acceptance_ids(table), "max_tokens": values.get("max_tokens")}
    return Parsed(values["arrival_time_s"], values["prompt_tokens"], values["output_tokens"],
                  values.get("request_id"), table, {k: v for k, v in extras.items() if v is not None})


def _acceptance_ids(table: Table) -> np.ndarray | None:
    """The optional `acceptance_id` column (record ids of an acceptance trace); an empty cell is an error."""
    if "acceptance_id" not in table.frame.columns:
        return None
    cells = table.frame["acceptance_id"].astype(str).str.strip().to_numpy(dtype=object)
    empty = np.flatnonzero(cells == "")
    if empty.size:
        raise table.cell_error(int(empty[0]), "acceptance_id", "empty (name an acceptance-trace record id)")
    return cells


def _check_azure(table: Table) -> Parsed:
    stamps = timestamps_ns(table, "TIMESTAMP")
    prompt = numeric(table, "ContextTokens", Kind.TOKENS)
    output = numeric(table, "GeneratedTokens", Kind.TOKENS)
    raise_first_bad(table, [stamps, prompt, output])
    return Parsed(stamps.values, prompt.values, output.values, None, table)


def _check_lengths(table: Table) -> Parsed:
    columns = PAIR_COLUMNS if set(PAIR_COLUMNS) <= set(table.frame.columns) else LENGTHS_COLUMNS
    prompt, output = numeric(table, columns[0], Kind.TOKENS), numeric(table, columns[1], Kind.TOKENS)
    raise_first_bad(table, [prompt, output])
    return Parsed(np.zeros(len(prompt.values)), prompt.values, output.values, None, table)


def _check_mooncake(table: Table) -> Parsed:
    stamps = numeric(table, "timestamp", Kind.TIME, MAX_TIME_S * 1000.0, "ms")
    prompt = numeric(table, "input_length", Kind.TOKENS)
    output = numeric(table, "output_length", Kind.TOKENS)
    raise_first_bad(table, [stamps, prompt, output])
    hashes = _hash_ids(table, prompt.values)
    return Parsed(stamps.values, prompt.values, output.values, None, table,
                  {} if hashes is None else {"block_hashes": hashes})


def _hash_ids(table: Table, prompt: np.ndarray) -> np.ndarray | None:
    """Mooncake's optional `hash_ids`: a list of integers per record (one per 512-token prompt block)."""
    if "hash_ids" not in table.frame.columns:
        return None
    out = np.empty(len(table.frame), dtype=object)
    for i, value in enumerate(table.frame["hash_ids"].to_numpy()):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise table.cell_error(i, "hash_ids", f"expected a list of integers, got {str(value)[:40]!r}")
        if len(value) > -(-int(prompt[i]) // MOONCAKE_HASH_TOKENS):
            raise table.cell_error(i, "hash_ids", f"{len(value)} hashes of {MOONCAKE_HASH_TOKENS} tokens for a "
                                                  f"{int(prompt[i])}-token prompt")
        out[i] = np.asarray(value, dtype=np.int64)
    return out


def _ns_to_seconds(stamps: np.ndarray) -> np.ndarray:
    return (stamps - stamps.min()) / 1e9


SCHEMAS = {
    "normalized": Schema(_check_normalized, 1.0, lambda raw: raw, "arrival_time_s"),
    "azure": Schema(_check_azure, 1e-9, _ns_to_seconds, "TIMESTAMP"),
    "mooncake": Schema(_check_mooncake, 1e-3, lambda raw: raw / 1000.0, "timestamp"),
    "lengths": Schema(_check_lengths, 1.0, lambda raw: raw, None),
}


def _finish(parsed: Parsed, name: str, time_scale: float, max_requests: int | None,
            duration_s: float | None) -> Trace:
    """Stable-sort by arrival, shift to 0, scale inter-arrivals, then cut."""
    order = np.argsort(parsed.arrival_s, kind="stable")
    arrival = parsed.arrival_s[order]
    arrival = (arrival - arrival[0]) * time_scale
    keep = len(arrival)
    if duration_s is not None:
        keep = min(keep, int(np.searchsorted(arrival, duration_s, side="left")))
    if max_requests is not None:
        keep = min(keep, max_requests)
    order = order[:keep]
    ids = np.arange(keep, dtype=np.int64) if parsed.request_id is None else parsed.request_id[order]
    extras = {key: values[order] for key, values in parsed.extras.items()}
    if "block_hashes" in extras:
        extras["hash_block_tokens"] = MOONCAKE_HASH_TOKENS
    return Trace(request_id=ids, arrival_s=arrival[:keep], prompt_tokens=parsed.prompt_tokens[order],
                 output_tokens=parsed.output_tokens[order], source=name, **extras)

"""Load request traces from files: normalized CSV, Azure 2023 CSV, Mooncake JSONL, lengths-only CSV.

The format is detected from the header columns (or a first line starting with
``{`` for JSONL) unless ``fmt`` forces one. Every problem with the file or the
options raises a one-line :class:`~traces.model.TraceError` naming the file,
the row and the column; nothing here lets another exception escape for bad input.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
import numbers
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from specdec_sim.traces.columns import (Kind, Table, check_unique_ids, numeric, raise_first_bad, require_columns, shown,
                             timestamps_ns)
from specdec_sim.traces.model import Trace, TraceError

FORMATS = ("normalized", "azure", "mooncake", "lengths")
NORMALIZED_COLUMNS = ["arrival_time_s", "prompt_tokens", "output_tokens"]  # request_id is optional
AZURE_COLUMNS = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
MOONCAKE_KEYS = ["timestamp", "input_length", "output_length"]
LENGTHS_COLUMNS = ["num_prefill_tokens", "num_decode_tokens"]  # Vidur processed traces


@dataclass(frozen=True)
class Parsed:
    """Checked columns of a file, in file order, before sorting and cutting."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    request_id: np.ndarray | None  # None: number the requests 0..n-1 in arrival order


def load_trace(path: str | os.PathLike, fmt: str | None = None, time_scale: float = 1.0,
               max_requests: int | None = None, duration_s: float | None = None) -> Trace:
    """Read a trace file, sort it by arrival (stable) and shift the first arrival to 0.

    ``fmt`` is None/"auto" (detect) or one of ``FORMATS``. ``time_scale``
    multiplies inter-arrival times (2.0 halves the rate), ``max_requests`` keeps
    the first N requests and ``duration_s`` keeps arrivals < duration_s (after scaling).
    """
    fmt = _check_options(fmt, time_scale, max_requests, duration_s)
    name = _display_name(path)
    text = _read_text(path, name)
    fmt = fmt or detect_format(text, name)
    parsed = _PARSERS[fmt](text, name)
    return _finish(parsed, name, float(time_scale), max_requests, duration_s)


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


def _read_text(path: str | os.PathLike, name: str) -> str:
    """The whole file as text (UTF-8, BOM dropped, bad bytes replaced; .gz accepted)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TraceError(f"{name}: cannot read trace file: {exc.strerror or exc}") from None
    except (TypeError, ValueError) as exc:
        raise TraceError(f"{name}: cannot read trace file: {exc}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, ValueError) as exc:
            raise TraceError(f"{name}: cannot decompress gzip trace file: {exc}") from None
    return data.decode("utf-8-sig", errors="replace")


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


def detect_format(text: str, name: str = "<trace>") -> str:
    """Guess the format from the first non-blank line of ``text``."""
    first = _first_line(text)
    if not first:
        raise TraceError(f"{name}: empty file (no header and no rows)")
    if first.startswith("{"):
        return "mooncake"
    header = set(_header(text))
    if set(AZURE_COLUMNS) <= header:
        return "azure"
    if header & set(NORMALIZED_COLUMNS + ["request_id"]):
        return "normalized"
    if set(LENGTHS_COLUMNS) <= header:
        return "lengths"
    raise TraceError(
        f"{name}: header row: cannot detect the trace format from columns {shown(first, 80)}; expected "
        f"normalized (request_id,arrival_time_s,prompt_tokens,output_tokens), Azure "
        f"(TIMESTAMP,ContextTokens,GeneratedTokens), Mooncake JSONL or lengths "
        f"(num_prefill_tokens,num_decode_tokens); pass fmt= to force one")


def _read_csv(text: str, name: str, required: list[str]) -> Table:
    """All cells as strings; missing columns, malformed CSV and empty files become TraceError."""
    if not _first_line(text):
        raise TraceError(f"{name}: empty file (no header and no rows)")
    require_columns(name, "header row", _header(text), required)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False,
                                index_col=False)
    except pd.errors.EmptyDataError:
        raise TraceError(f"{name}: empty file (no header and no rows)") from None
    except pd.errors.ParserError as exc:
        raise TraceError(f"{name}: {_parser_problem(str(exc))}") from None
    except (ValueError, TypeError, IndexError, OverflowError, MemoryError) as exc:
        raise TraceError(f"{name}: cannot parse as CSV: {exc}") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    require_columns(name, "header row", list(frame.columns), required)  # pandas' view of the header
    if len(frame) == 0:
        raise TraceError(f"{name}: empty trace: header but no data rows")
    return Table(name, frame)


def _parser_problem(message: str) -> str:
    """Reword pandas' tokenizer error as 'line N, column M: ...'."""
    match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if match:
        expected, line, saw = (int(g) for g in match.groups())
        return (f"line {line}, column {expected + 1}: malformed CSV row "
                f"({saw} fields where the header has {expected})")
    return f"malformed CSV: {message.strip()}"


def _parse_normalized(text: str, name: str) -> Parsed:
    table = _read_csv(text, name, NORMALIZED_COLUMNS)
    checks = [numeric(table, "arrival_time_s", Kind.TIME), numeric(table, "prompt_tokens", Kind.TOKENS),
              numeric(table, "output_tokens", Kind.TOKENS)]
    if "request_id" in table.frame.columns:
        checks.insert(0, numeric(table, "request_id", Kind.ID))
    raise_first_bad(table, checks)
    values = {check.column: check.values for check in checks}
    ids = values.get("request_id")
    if ids is not None:
        check_unique_ids(table, "request_id", ids)
    return Parsed(values["arrival_time_s"], values["prompt_tokens"], values["output_tokens"], ids)


def _parse_azure(text: str, name: str) -> Parsed:
    table = _read_csv(text, name, AZURE_COLUMNS)
    stamps = timestamps_ns(table, "TIMESTAMP")
    prompt = numeric(table, "ContextTokens", Kind.TOKENS)
    output = numeric(table, "GeneratedTokens", Kind.TOKENS)
    raise_first_bad(table, [stamps, prompt, output])
    arrival = (stamps.values - stamps.values.min()) / 1e9
    return Parsed(arrival, prompt.values, output.values, None)


def _parse_lengths(text: str, name: str) -> Parsed:
    columns = ["prompt_tokens", "output_tokens"]
    if not set(columns) <= set(_header(text)):
        columns = LENGTHS_COLUMNS
    table = _read_csv(text, name, columns)
    prompt, output = numeric(table, columns[0], Kind.TOKENS), numeric(table, columns[1], Kind.TOKENS)
    raise_first_bad(table, [prompt, output])
    return Parsed(np.zeros(len(prompt.values)), prompt.values, output.values, None)


def _parse_mooncake(text: str, name: str) -> Parsed:
    table = _read_jsonl(text, name)
    stamps = numeric(table, "timestamp", Kind.TIME)
    prompt = numeric(table, "input_length", Kind.TOKENS)
    output = numeric(table, "output_length", Kind.TOKENS)
    raise_first_bad(table, [stamps, prompt, output])
    return Parsed(stamps.values / 1000.0, prompt.values, output.values, None)


def _read_jsonl(text: str, name: str) -> Table:
    """One JSON object per non-blank line; the Mooncake keys as string cells."""
    records: list[dict] = []
    line_numbers: list[int] = []
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        records.append(_json_object(stripped, name, number))
        line_numbers.append(number)
    if not records:
        raise TraceError(f"{name}: empty file (no rows)")
    cells = {key: [_cell(record, key, name, line) for record, line in zip(records, line_numbers)]
             for key in MOONCAKE_KEYS}
    return Table(name, pd.DataFrame(cells, dtype=object), np.asarray(line_numbers))


def _json_object(line: str, name: str, number: int) -> dict:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{name}: line {number}, column {exc.colno}: not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise TraceError(f"{name}: line {number}, column 1: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise TraceError(f"{name}: line {number}, column 1: expected a JSON object, "
                         f"got {type(value).__name__}")
    return value


def _cell(record: dict, key: str, name: str, line: int) -> str:
    """A JSON value as cell text: numbers and strings as written, null as empty."""
    if key not in record:
        raise TraceError(f"{name}: line {line}, column '{key}': required key is missing")
    value = record[key]
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return json.dumps(value)[:60]
    return value if isinstance(value, str) else repr(value)


_PARSERS = {"normalized": _parse_normalized, "azure": _parse_azure,
            "mooncake": _parse_mooncake, "lengths": _parse_lengths}


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
    return Trace(request_id=ids, arrival_s=arrival[:keep], prompt_tokens=parsed.prompt_tokens[order],
                 output_tokens=parsed.output_tokens[order], source=name)

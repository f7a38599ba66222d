"""Read a trace file in chunks of raw string cells (:class:`~traces.columns.Table`).

CSV is read with pandas' chunked reader, JSONL line by line, Parquet batch by batch with
pyarrow, so a caller that needs only the first rows stops after them and memory stays
proportional to what it keeps. Every read problem becomes a one-line TraceError.
"""
from __future__ import annotations

import io
import json
import os
import re
import warnings
from collections.abc import Generator, Iterator

import numpy as np
import pandas as pd

from specdec_sim.traces.columns import Table, require_columns
from specdec_sim.traces.model import TraceError
from specdec_sim.traces.stream import GuardedReader

CHUNK_ROWS = 65_536
Tables = Generator[Table, None, None]  # chunks of one file, in file order


def csv_tables(stream: GuardedReader, name: str, required: list[str], chunk_rows: int) -> Tables:
    """Chunks of all cells as strings; missing columns, malformed CSV and empty files become TraceError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = pd.read_csv(io.BufferedReader(stream), dtype=str, keep_default_na=False, na_filter=False,
                                 index_col=False, chunksize=chunk_rows, encoding="utf-8-sig",
                                 encoding_errors="replace")
    except TraceError:
        raise  # from the guarded stream: binary content, over-long line
    except pd.errors.EmptyDataError:
        raise TraceError(f"{name}: empty file (no header and no rows)") from None
    except (pd.errors.ParserError, ValueError, TypeError, IndexError, OverflowError, MemoryError) as exc:
        raise TraceError(f"{name}: {_parser_problem(str(exc))}") from None
    offset = 0
    with reader:
        for frame in _frames(reader, name):
            frame.columns = [str(column).strip() for column in frame.columns]
            if offset == 0:
                require_columns(name, "header row", list(frame.columns), required)  # pandas' view of the header
            if len(frame):
                yield Table(name, frame, offset=offset)
                offset += len(frame)
    if offset == 0:
        raise TraceError(f"{name}: empty trace: header but no data rows")


def _frames(reader: Iterator[pd.DataFrame], name: str) -> Iterator[pd.DataFrame]:
    """The reader's chunks, with its exceptions reworded."""
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frame = next(reader)
        except (StopIteration, pd.errors.EmptyDataError):
            return
        except TraceError:
            raise  # from the guarded stream: binary content, over-long line
        except (pd.errors.ParserError, ValueError, TypeError, IndexError, OverflowError, MemoryError) as exc:
            raise TraceError(f"{name}: {_parser_problem(str(exc))}") from None
        yield frame


def _parser_problem(message: str) -> str:
    """Reword pandas' tokenizer error as 'line N, column M: ...'."""
    match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if match:
        expected, line, saw = (int(g) for g in match.groups())
        return (f"line {line}, column {expected + 1}: malformed CSV row "
                f"({saw} fields where the header has {expected})")
    return f"malformed CSV: {' '.join(message.split())[:200]}"


def jsonl_tables(stream: GuardedReader, name: str, keys: list[str], chunk_rows: int) -> Tables:
    """One JSON object per non-blank line; ``keys`` as string cells, ``chunk_rows`` records a chunk."""
    text = io.TextIOWrapper(io.BufferedReader(stream), encoding="utf-8-sig", errors="replace", newline="\n")
    records: list[dict] = []
    line_numbers: list[int] = []
    seen = 0
    for number, line in enumerate(text, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        records.append(_json_object(stripped, name, number))
        line_numbers.append(number)
        if len(records) == chunk_rows:
            yield _jsonl_table(records, line_numbers, keys, name)
            seen += len(records)
            records, line_numbers = [], []
    if records:
        yield _jsonl_table(records, line_numbers, keys, name)
    elif seen == 0:
        raise TraceError(f"{name}: empty file (no rows)")


OPTIONAL_LIST_KEYS = ("hash_ids",)  # kept as Python values (Mooncake's prompt block hashes), when every record has one


def _jsonl_table(records: list[dict], line_numbers: list[int], keys: list[str], name: str) -> Table:
    cells = {key: [_cell(record, key, name, line) for record, line in zip(records, line_numbers)] for key in keys}
    for key in OPTIONAL_LIST_KEYS:
        if records and all(key in record for record in records):
            cells[key] = [record[key] for record in records]
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


def parquet_columns(path: str | os.PathLike, name: str) -> list[str]:
    """The column names of a Parquet file."""
    return list(_parquet_file(path, name).schema_arrow.names)


def parquet_tables(path: str | os.PathLike, name: str, required: list[str], chunk_rows: int) -> Tables:
    """Batches of ``required`` columns as string cells (nulls as empty cells), rows numbered from 1."""
    import pyarrow as pa

    parquet = _parquet_file(path, name)
    require_columns(name, "header row", list(parquet.schema_arrow.names), required)
    offset = 0
    try:
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=required):
            frame = pd.DataFrame({column: _string_cells(batch.column(column).to_pandas()) for column in required})
            if len(frame):
                yield Table(name, frame, offset=offset)
                offset += len(frame)
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise TraceError(f"{name}: cannot read Parquet trace: {' '.join(str(exc).split())[:200]}") from None
    if offset == 0:
        raise TraceError(f"{name}: empty trace: Parquet file has no rows")


def _parquet_file(path: str | os.PathLike, name: str):  # -> pyarrow.parquet.ParquetFile
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise TraceError(f"{name}: cannot read Parquet trace: {' '.join(str(exc).split())[:200]}") from None


def _string_cells(series: pd.Series) -> pd.Series:
    """Typed Parquet values as the cell text the checks expect; nulls become empty cells."""
    missing = series.isna().to_numpy()
    cells = series.astype(str).astype(object)
    cells[missing] = ""
    return cells

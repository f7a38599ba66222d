"""Vectorised conversion and checking of raw trace cells.

A :class:`Table` holds the raw cell text of one trace file (CSV rows or JSONL
records, all as strings). Columns are converted with pandas in one pass; the
first offending row is found with numpy, and only that single cell is
inspected to word the :class:`~traces.model.TraceError` message, so checking a
large file costs a few vectorised operations.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import pandas as pd

from specdec_sim.traces.model import MAX_TOKENS, TraceError

MAX_EXACT_INT = 2**53  # larger magnitudes are not exact in float64
_NAN_WORDS = {"nan", "+nan", "-nan"}


class Kind(Enum):
    """What a numeric column holds, which decides its checks."""

    TOKENS = "token count"  # whole number >= 1
    TIME = "time"  # finite number >= 0
    ID = "request id"  # whole number, any sign


@dataclass(frozen=True)
class Table:
    """Raw string cells of one file, with a way to name each data row."""

    name: str  # the file, as it appears in messages
    frame: pd.DataFrame  # string cells; column names stripped
    line_numbers: np.ndarray | None = None  # JSONL: physical line of each record
    offset: int = 0  # data rows of the file before this table (tables are read in chunks)

    def row_label(self, index: int) -> str:
        """'row N' (1-based data row, CSV) or 'line N' (JSONL physical line)."""
        if self.line_numbers is None:
            return f"row {self.offset + index + 1}"
        return f"line {int(self.line_numbers[index])}"

    def head(self, rows: int) -> "Table":
        """The first ``rows`` rows (all of them when there are fewer)."""
        if rows >= len(self.frame):
            return self
        lines = None if self.line_numbers is None else self.line_numbers[:rows]
        return Table(self.name, self.frame.iloc[:rows], lines, self.offset)

    def cell_error(self, index: int, column: str, problem: str) -> TraceError:
        """A one-line error naming file, row and column."""
        return TraceError(f"{self.name}: {self.row_label(index)}, column '{column}': {problem}")


def require_columns(name: str, where: str, found: list, required: list[str]) -> None:
    """Raise naming the first of ``required`` that is not in ``found``."""
    for column in required:
        if column not in found:
            shown_columns = ", ".join(str(c) for c in found[:12]) + (", ..." if len(found) > 12 else "")
            raise TraceError(f"{name}: {where}, column '{column}': required column is missing "
                             f"(found: {shown(shown_columns, 120)})")


@dataclass(frozen=True)
class Checked:
    """A converted column and the mask of rows that failed its checks."""

    column: str
    values: np.ndarray
    bad: np.ndarray
    describe: object  # callable(index) -> problem text for a bad row


def shown(text: object, limit: int = 40) -> str:
    """A cell as it appears in messages: repr, shortened."""
    value = repr(text)
    return value if len(value) <= limit else value[: limit - 4] + "...'"


def _cells(table: Table, column: str) -> np.ndarray:
    """The stripped cell strings of ``column`` as an object array."""
    return table.frame[column].astype(str).str.strip().to_numpy(dtype=object)


def _to_numbers(cells: np.ndarray) -> tuple[np.ndarray, bool]:
    """Parse cells to numbers; (values, exact_int). NaN where not a number."""
    try:
        parsed = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce")
    except (TypeError, ValueError, OverflowError):
        return np.array([_float_or_nan(c) for c in cells], dtype=np.float64), False
    if parsed.dtype == np.int64:
        return parsed.to_numpy(), True
    return parsed.to_numpy(dtype=np.float64, na_value=np.nan), False


def _float_or_nan(cell: object) -> float:
    try:
        return float(cell)
    except (TypeError, ValueError, OverflowError):
        return float("nan")


def numeric(table: Table, column: str, kind: Kind, max_time: float = float("inf"), unit: str = "s") -> Checked:
    """Convert ``column`` to numbers and mark the rows that break ``kind``'s rules.

    Token counts must be in [1, MAX_TOKENS]; times in [0, ``max_time``] (``unit`` names it).
    """
    cells = _cells(table, column)
    values, exact_int = _to_numbers(cells)
    if exact_int:
        bad = np.zeros(len(values), dtype=bool)
    else:
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values)
            if kind is not Kind.TIME:
                bad |= (np.floor(values) != values) | (np.abs(values) > MAX_EXACT_INT)
    if kind is Kind.TOKENS:
        bad |= ~((values >= 1) & (values <= MAX_TOKENS))
    elif kind is Kind.TIME:
        bad |= ~((values >= 0) & (values <= max_time))

    def describe(index: int) -> str:
        return _problem(cells[index], float(values[index]), kind, max_time, unit)

    if not bad.any() and not exact_int:
        values = values.astype(np.int64) if kind is not Kind.TIME else values
    elif exact_int and kind is Kind.TIME:
        values = values.astype(np.float64)
    return Checked(column, values, bad, describe)


def _problem(cell: str, value: float, kind: Kind, max_time: float, unit: str) -> str:
    """Why one cell was rejected, in words."""
    if cell == "":
        return "empty value"
    if np.isnan(value):
        if cell.lower() in _NAN_WORDS:
            return f"NaN is not allowed (got {shown(cell)})"
        return f"not a number: {shown(cell)}"
    if not np.isfinite(value):
        return f"not a finite number: {shown(cell)}"
    if kind is not Kind.TIME and value != np.floor(value):
        return f"{kind.value} must be a whole number, got {shown(cell)}"
    if kind is not Kind.TIME and abs(value) > MAX_EXACT_INT:
        return f"{kind.value} is too large: {shown(cell)}"
    if kind is Kind.TOKENS and value > MAX_TOKENS:
        return f"token count is too large: {shown(cell)} (limit {MAX_TOKENS})"
    if kind is Kind.TOKENS:
        return f"token count must be >= 1, got {shown(cell)}"
    if value > max_time:
        return f"time is beyond {max_time:g} {unit} (float seconds lose microsecond resolution): {shown(cell)}"
    return f"time must be >= 0, got {shown(cell)}"


def timestamps_ns(table: Table, column: str) -> Checked:
    """Parse date-time cells (e.g. '2023-11-16 18:17:03.9799600') to int64 ns since the epoch."""
    cells = _cells(table, column)
    try:
        parsed = pd.to_datetime(pd.Series(cells, dtype=object), format="ISO8601", errors="coerce", utc=True)
        nat = parsed.isna().to_numpy()
        ns = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    except (TypeError, ValueError, OverflowError):
        ns, nat = _timestamps_one_by_one(cells)

    def describe(index: int) -> str:
        if cells[index] == "":
            return "empty value"
        return f"not a timestamp like '2023-11-16 18:17:03.9799600': {shown(cells[index])}"

    return Checked(column, ns, nat, describe)


def _timestamps_one_by_one(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slow fallback for mixed timestamp styles: parse each cell alone."""
    ns = np.zeros(len(cells), dtype=np.int64)
    nat = np.zeros(len(cells), dtype=bool)
    for i, cell in enumerate(cells):
        try:
            stamp = pd.Timestamp(cell)
            stamp = stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")
            ns[i] = stamp.value
            nat[i] = pd.isna(stamp)
        except (TypeError, ValueError, OverflowError):
            nat[i] = True
    return ns, nat


def raise_first_bad(table: Table, checked: list[Checked]) -> None:
    """Raise for the earliest bad row over all columns (ties: first listed column)."""
    best: tuple[int, int] | None = None
    for order, column in enumerate(checked):
        if column.bad.any():
            index = int(np.argmax(column.bad))
            if best is None or index < best[0]:
                best = (index, order)
    if best is not None:
        index, order = best
        column = checked[order]
        raise table.cell_error(index, column.column, column.describe(index))


def check_unique_ids(table: Table, column: str, ids: np.ndarray) -> None:
    """Raise naming the first row whose request id was already used."""
    repeated = pd.Series(ids).duplicated().to_numpy()
    if repeated.any():
        index = int(np.argmax(repeated))
        first = int(np.argmax(ids == ids[index]))
        raise table.cell_error(index, column, f"duplicate request_id {int(ids[index])} "
                                              f"(already used in {table.row_label(first)})")

"""A sweep's result table: an append-only JSON-lines journal (the resume source) plus Parquet/CSV.

Rows are keyed by `run_id`; a journal line that is torn or not a row is skipped with one warning
line on stderr (its run is run again); `ResultStore.add` appends to the journal with fsync and
rewrites the table atomically (`write_atomic`, signals held back while it writes) at most once per
`TABLE_REWRITE_INTERVAL_S`, and `write_table` at the end. `tracked_files` says which files of a directory git
tracks: a sweep writes into a directory holding committed results only when asked to resume there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from specdec_sim.safe_output import signals_deferred, write_atomic

JOURNAL = "runs.jsonl"
STATUS_OK = "ok"
STATUS_ERROR = "error"
TABLE_REWRITE_INTERVAL_S = 1.0


@dataclass
class ResultStore:
    """The journal plus the Parquet/CSV table of one sweep directory."""

    out_dir: Path
    name: str = "results"
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    _last_write: float = 0.0
    _added: int = 0  # rows journaled by this store (a resumed sweep with nothing to run adds none)

    @property
    def journal(self) -> Path:
        return self.out_dir / (JOURNAL if self.name == "results" else f"{self.name}.jsonl")

    @classmethod
    def open(cls, out_dir: str | os.PathLike, name: str = "results") -> "ResultStore":
        store = cls(Path(out_dir), name)
        store.out_dir.mkdir(parents=True, exist_ok=True)
        store.rows = store._load()
        return store

    def _load(self, warn: bool = True) -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        if self.journal.exists():
            text = self.journal.read_text(errors="replace")
            if text and not text.endswith("\n"):  # a line cut by an interrupt: end it
                with self.journal.open("a") as fh:
                    fh.write("\n")
            bad: list[int] = []
            for number, line in enumerate(text.splitlines(), 1):
                row = _parse_row(line)
                if row is not None:
                    rows[row["run_id"]] = row
                elif line.strip():
                    bad.append(number)
            if bad and warn:
                print(f"sweep: warning: {self.journal}: skipped {len(bad)} unreadable line(s) (first: line "
                      f"{bad[0]}); those runs are run again", file=sys.stderr)
            return rows
        parquet = self.out_dir / f"{self.name}.parquet"
        if parquet.exists():
            for row in pd.read_parquet(parquet).to_dict("records"):
                rows[row["run_id"]] = row
        return rows

    def finished(self) -> set[str]:
        return {rid for rid, row in self.rows.items() if row.get("status") == STATUS_OK}

    def add(self, row: dict[str, Any]) -> None:
        """Journal the row (the record resume trusts), then keep it for the table."""
        with self.journal.open("a") as fh:
            fh.write(json.dumps(row, default=_json_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.rows[row["run_id"]] = row
        self._added += 1
        if time.monotonic() - self._last_write >= TABLE_REWRITE_INTERVAL_S:
            self.write_table()

    def write_final_table(self) -> pd.DataFrame:
        """The table from the journal itself, so an interrupt between journaling a row and keeping it (SIGINT,
        SIGTERM) can never leave the table and the journal disagreeing. A sweep that added no row leaves tables
        that exist as they are (resuming a finished sweep modifies no file)."""
        self.rows = self._load(warn=False)  # unreadable lines were reported when the store opened
        if not self._added and all((self.out_dir / f"{self.name}.{ext}").is_file() for ext in ("parquet", "csv")):
            return self.frame()
        return self.write_table()

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(list(self.rows.values()))
        if df.empty:
            return df
        front = [c for c in ("run_id", "status", "error", "wall_s") if c in df]
        return df[front + [c for c in df.columns if c not in front]]

    def write_table(self) -> pd.DataFrame:
        """Atomically rewrite `NAME.parquet` and `NAME.csv` from the rows recorded so far."""
        df = self.frame()
        self._last_write = time.monotonic()
        if df.empty:
            return df
        with signals_deferred():  # both files or neither: an interrupt between the two would leave them disagreeing
            write_atomic(self.out_dir / f"{self.name}.parquet", lambda p: df.to_parquet(p, index=False))
            write_atomic(self.out_dir / f"{self.name}.csv", lambda p: df.to_csv(p, index=False))
        return df


GIT_TIMEOUT_S = 60.0  # a guard against a hung git, not a measurement


def tracked_files(directory: str | os.PathLike) -> list[str]:
    """The files under `directory` that git tracks (deleted ones too), as git names them; none where git is missing or
    the directory is in no git work tree."""
    target = Path(directory).expanduser().resolve()
    anchor = next((p for p in (target, *target.parents) if p.is_dir()), None)
    if anchor is None:
        return []
    try:
        proc = subprocess.run(["git", "-C", str(anchor), "ls-files", "-z", "--", str(target)], capture_output=True,
                              timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:  # not a work tree, or the directory lies outside it
        return []
    return [name for name in proc.stdout.decode("utf-8", "replace").split("\0") if name]


def _parse_row(line: str) -> dict[str, Any] | None:
    """A journal line as a row, or None when it is torn, not JSON, or not a row with a run_id."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("run_id"), str) else None


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()  # numpy scalars
    return str(value)

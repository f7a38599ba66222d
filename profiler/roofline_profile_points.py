"""A profile-gpu measurements CSV as measured points for the calibration builder (no torch).

profile-gpu writes one row per measured forward (`profiler/measure.py`): role (target or draft), kind
(decode, verify, prefill), batch, query, context, status, median_ms, ... Every `ok` row becomes a
`forward_ms` Measure of set "profile" (several passes of one point merged by their median, as
`profiler.fit.merge_passes` does), so the builder fits the per-forward fixed times to it beside the
published points and reports its error against it.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from specdec_sim.profiler.measure_fit import merge_passes
from specdec_sim.profiler.published import Measure, PublishedError

REQUIRED = ("role", "kind", "batch", "query", "context", "status", "median_ms")


def _row_measure(row: dict, where: str, device: str) -> Measure | None:
    if row.get("role") not in ("target", "draft"):
        raise PublishedError(f"{where}: column 'role' must be target or draft, not {row.get('role')!r}")
    if row.get("status", "ok") != "ok":
        return None
    try:
        batch, query, context = int(row["batch"]), int(row["query"]), int(row["context"])
        ms = float(row["median_ms"])
    except (TypeError, ValueError):
        raise PublishedError(f"{where}: batch, query, context must be whole numbers and median_ms a number") from None
    if batch < 1 or query < 1 or context < 0 or not (math.isfinite(ms) and ms > 0):
        raise PublishedError(f"{where}: batch and query must be >= 1, context >= 0, median_ms finite and > 0")
    return Measure(set="profile", role="fit", target=row.get("model", ""), proposer=row["role"], gpu=device,
                   tp=1, metric="forward_ms", value=ms, unit="ms", batch=batch, k=0, context_tokens=context,
                   source=f"profile-gpu measurements ({device or 'device not recorded'})",
                   query=query, prefill=row.get("kind") == "prefill")


def read_profile_points(path: str | Path) -> list[Measure]:
    """The ok rows of a profile-gpu CSV as forward_ms Measures; PublishedError names the file and line."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise PublishedError(f"{path}: not a profile-gpu CSV (no column {missing[0]!r})")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PublishedError(f"{path}: cannot read ({exc})") from None
    for line, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            raise PublishedError(f"{path}: line {line}: wrong number of fields for the header")
        row["_line"] = line
    out = []
    for row in merge_passes(rows):
        m = _row_measure(row, f"{path}: line {row['_line']}", row.get("device", ""))
        if m is not None:
            out.append(m)
    if not out:
        raise PublishedError(f"{path}: no measured (status ok) rows")
    return out

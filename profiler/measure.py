"""Run a measurement grid: time each point, append it to the CSV at once, resume, skip what does not fit.

Rows are written one by one (and flushed), so an interrupted run keeps everything it measured;
the next run with the same --out reads the CSV and skips finished points (key: role, batch, query,
context). A run killed while writing a row leaves that row without its line end: the next run
cuts it off and measures the point again. Any other malformed content (binary data, a row with
the wrong fields) is a `MeasurementsError` naming the file and line. A shape that runs out of
memory is recorded as skipped with its reason and the run goes on.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterable

from specdec_sim.profiler.measure_grid import ROLES, GridPoint
from specdec_sim.costmodel.architectures import DTYPE_BYTES, Architecture, resolve_name
from specdec_sim.profiler.measure_timing import DeviceInfo, Timing, free_memory, is_oom, time_forward

MEASUREMENTS_CSV = "measurements.csv"


@dataclass
class Measurement:
    """One row of measurements.csv."""

    role: str
    model: str
    kind: str
    batch: int
    query: int
    context: int
    batched_tokens: int
    kv_tokens: int
    status: str  # "ok" or "skipped"
    reason: str
    median_ms: float | None
    p10_ms: float | None
    p90_ms: float | None
    repeats: int
    achieved_gbs: float | None  # (weights + KV bytes) / median time
    achieved_tflops: float | None  # (2 * params * tokens + attention FLOPs) / median time
    peak_gbs: float | None
    peak_tflops: float | None
    device: str
    dtype: str
    torch: str
    cuda: str
    transformers: str
    measured_at: str
    clock: str = "cuda-events"  # cuda-events, wall (perf_counter) or thread (thread_time, CPU only)
    pass_no: int = 0  # which pass over the grid (--passes measures every point once per pass)


FIELDS = [f.name for f in fields(Measurement)]


class ProfileMismatch(ValueError):
    """The output directory already holds measurements of another model in the same role."""


class MeasurementsError(ValueError):
    """A measurements.csv that is not one (binary, garbled, wrong columns); names the file and line."""


KINDS = ("decode", "verify", "prefill")
REQUIRED_COLUMNS = ("role", "model", "kind", "batch", "query", "context", "status", "median_ms")


def _complete_text(path: Path, repair: bool) -> str:
    """The file's text up to its last line end; with repair, a torn last line is cut from the file."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MeasurementsError(f"{path}: not a measurements CSV (byte {exc.start} is not UTF-8 text): "
                                "delete it or use another --out") from None
    if "\x00" in text:
        raise MeasurementsError(f"{path}: not a measurements CSV (it holds NUL bytes): delete it or use another --out")
    if text.endswith("\n") or not text:
        return text
    complete = text[:text.rfind("\n") + 1]
    if repair:  # the row being written when the last run was killed: measure that point again
        os.truncate(path, len(complete.encode("utf-8")))
    return complete


def _check_row(row: dict, line: int, path: Path) -> None:
    def bad(column: str, what: str) -> MeasurementsError:
        return MeasurementsError(f"{path}: line {line}, column {column}: {row.get(column)!r} is not {what}")

    if None in row or any(v is None for v in row.values()):
        raise MeasurementsError(f"{path}: line {line}: wrong number of fields for the header")
    if row["role"] not in ROLES:
        raise bad("role", "target or draft")
    if row["kind"] not in KINDS:
        raise bad("kind", "decode, verify or prefill")
    for column, low in (("batch", 1), ("query", 1), ("context", 0), ("pass_no", 0)):
        value = row.get(column, "")
        if (value != "" or column != "pass_no") and not (value.isdigit() and int(value) >= low):
            raise bad(column, f"a whole number >= {low}")
    if row["status"] not in ("ok", "skipped"):
        raise bad("status", "ok or skipped")
    if row["status"] == "ok":
        try:
            ms = float(row["median_ms"])
        except ValueError:
            raise bad("median_ms", "a latency in ms") from None
        if not (math.isfinite(ms) and ms > 0):
            raise bad("median_ms", "a finite latency > 0 ms")


def read_measurements(path: Path, repair: bool = False) -> list[dict]:
    """Checked rows of measurements.csv (none if it does not exist). A torn last line (no line end) is
    left out, and with repair=True also cut from the file so the next appended row starts cleanly."""
    if not path.is_file():
        return []
    text = _complete_text(path, repair)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if text and missing:
            raise MeasurementsError(f"{path}: not a measurements CSV (no column {missing[0]!r} in line 1): "
                                    "delete it or use another --out")
        rows = []
        for row in reader:
            _check_row(row, reader.line_num, path)
            rows.append(row)
    except csv.Error as exc:
        raise MeasurementsError(f"{path}: not a measurements CSV ({exc}): delete it or use another --out") from None
    return rows


def done_keys(rows: Iterable[dict], models: dict[str, str], device: str | None = None,
              dtype: str | None = None) -> set[tuple[str, int, int, int, int]]:
    """Keys of finished points; refuses to mix models, devices or dtypes in one directory."""
    keys = set()
    for r in rows:
        role = r["role"]
        if role in models and resolve_name(r["model"])[0] != resolve_name(models[role])[0]:
            raise ProfileMismatch(f"{role} measurements in this directory are of {r['model']!r}, "
                                  f"not {models[role]!r}: use another --out")
        for col, want in (("device", device), ("dtype", dtype)):
            if want is not None and r.get(col) != want:
                raise ProfileMismatch(f"measurements in this directory were taken with {col} {r.get(col)!r}, "
                                      f"not {want!r}: use another --out")
        keys.add((role, int(r["batch"]), int(r["query"]), int(r["context"]), int(r.get("pass_no") or 0)))
    return keys


def append_row(path: Path, row: Measurement) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    header = FIELDS
    if not new:  # keep the columns of a CSV written by another version
        with path.open(newline="") as fh:
            header = next(csv.reader(fh))
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(asdict(row))
        fh.flush()


def physical_rates(shape: Architecture, p: GridPoint, dtype: str, ms: float) -> tuple[float, float]:
    """Achieved GB/s and TFLOP/s of a point, gpt-fast style."""
    logit_tokens = p.batch if p.kind == "prefill" else p.batched_tokens
    seconds = ms / 1000.0
    gbs = shape.forward_bytes(p.batch, p.query, p.context, DTYPE_BYTES[dtype]) / seconds / 1e9
    tflops = shape.forward_flops(p.batch, p.query, p.context, logit_tokens) / seconds / 1e12
    return gbs, tflops


def measure_point(model, shape: Architecture, p: GridPoint, info: DeviceInfo, dtype: str,
                  warmup: int, repeats: int, clock: str = "wall") -> Measurement:
    """Time one point; an out-of-memory shape comes back as a skipped row instead of an exception."""
    status, reason, t = "ok", "", None
    try:
        t = time_forward(model, p.batch, p.query, p.context, info.device, warmup=warmup, repeats=repeats,
                         logits_to_keep=1 if p.kind == "prefill" else 0, clock=clock)
    except Exception as exc:  # only OOM is expected; anything else is a bug and re-raised
        if not is_oom(exc):
            raise
        status, reason = "skipped", f"out of memory: {str(exc).splitlines()[0][:160]}"
    if t is None:
        free_memory(info.device)  # outside the except block, so the traceback's tensors are gone
    gbs = tflops = None
    if t is not None:
        gbs, tflops = physical_rates(shape, p, dtype, t.median_ms)
    row = _row(p, shape.name, status, reason, t, gbs, tflops, info, dtype)
    row.clock = "cuda-events" if info.device.startswith("cuda") else clock
    return row


def _row(p: GridPoint, model: str, status: str, reason: str, t: Timing | None, gbs, tflops,
         info: DeviceInfo, dtype: str) -> Measurement:
    r = (lambda v: None if v is None else round(v, 6))
    return Measurement(role=p.role, model=model, kind=p.kind, batch=p.batch, query=p.query, context=p.context,
                       batched_tokens=p.batched_tokens, kv_tokens=p.kv_tokens, status=status, reason=reason,
                       median_ms=r(t.median_ms) if t else None, p10_ms=r(t.p10_ms) if t else None,
                       p90_ms=r(t.p90_ms) if t else None, repeats=t.repeats if t else 0,
                       achieved_gbs=r(gbs), achieved_tflops=r(tflops), peak_gbs=info.peak_bandwidth_gbs,
                       peak_tflops=info.peak_tflops, device=info.name, dtype=dtype, torch=info.torch_version,
                       cuda=info.cuda_version, transformers=info.transformers_version,
                       measured_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def describe(m: Measurement) -> str:
    """One line in physical units: latency, bandwidth and FLOP/s next to the device peaks."""
    head = f"{m.role:6s} {m.kind:7s} B={m.batch:<4d} q={m.query:<4d} ctx={m.context:<5d}"
    if m.pass_no:
        head += f" pass {m.pass_no + 1}"
    if m.status != "ok":
        return f"{head} skipped ({m.reason})"
    peak_bw = f"{m.peak_gbs:.0f}" if m.peak_gbs else "unknown"
    peak_tf = f"{m.peak_tflops:.0f}" if m.peak_tflops else "unknown"
    return (f"{head} {m.median_ms:9.3f} ms [p10 {m.p10_ms:.3f}, p90 {m.p90_ms:.3f}]  "
            f"{m.achieved_gbs:8.2f} GB/s (peak {peak_bw})  {m.achieved_tflops:7.3f} TFLOP/s (peak {peak_tf})")


def run_grid(points: list[GridPoint], models: dict, shapes: dict[str, Architecture], info: DeviceInfo,
             dtype: str, csv_path: Path, warmup: int, repeats: int, clock: str = "wall",
             on_row: Callable[[Measurement], None] | None = None,
             on_skip_done: Callable[[GridPoint], None] | None = None, passes: int = 1) -> int:
    """Measure every (point, pass) not yet in csv_path, pass by pass; returns how many were measured now.
    Several passes spread each point's samples over the whole run, so a burst of load from other
    jobs hits one sample of many points instead of every sample of a few."""
    done = done_keys(read_measurements(csv_path, repair=True), {role: s.name for role, s in shapes.items()}, info.name, dtype)
    measured = 0
    for pass_no in range(passes):
        for p in points:
            if p.key + (pass_no,) in done:
                if on_skip_done:
                    on_skip_done(p)
                continue
            row = measure_point(models[p.role], shapes[p.role], p, info, dtype, warmup, repeats, clock)
            row.pass_no = pass_no
            append_row(csv_path, row)
            done.add(p.key + (pass_no,))
            measured += 1
            if on_row:
                on_row(row)
    return measured


def stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

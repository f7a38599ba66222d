"""Writing and printing simulation results: files pandas reads, a side-by-side table, a progress bar.

Every file is written to a temporary name in its directory and renamed when complete
(`specdec_sim.safe_output.write_atomic`), and a policy's summary.json is written last, so a policy directory with a
readable summary.json listing its files is finished (`finished_policies`, for `--resume`).
Speedups compare policies only over the requests every policy completed, and failed requests
get a warning line under the table, naming each kind of reason once with its count; with --slo the
table shows request goodput and SLO attainment. The table fits the console; narrow consoles drop
the lower-priority columns rather than wrap rows.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from specdec_sim.safe_output import write_atomic, write_text_atomic
from specdec_sim.simulator.summary import summary_record

# (key, label, short label, format), in the order shown; PRIORITY says which go first when narrow
TABLE_COLUMNS = (
    ("completed", "done", "done", "{:.0f}"), ("failed", "failed", "fail", "{:.0f}"),
    ("mean_e2el_ms", "mean E2E ms", "E2E ms", "{:.1f}"), ("p99_e2el_ms", "p99 E2E ms", "p99 E2E", "{:.1f}"),
    ("mean_ttft_ms", "mean TTFT ms", "TTFT ms", "{:.1f}"), ("p99_ttft_ms", "p99 TTFT ms", "p99 TTFT", "{:.1f}"),
    ("mean_tpot_ms", "mean TPOT ms", "TPOT ms", "{:.2f}"), ("mean_itl_ms", "mean ITL ms", "ITL ms", "{:.2f}"),
    ("output_throughput", "out tok/s", "tok/s", "{:.0f}"), ("request_goodput", "goodput req/s", "goodput", "{:.2f}"),
    ("slo_attainment", "SLO met", "SLO", "{:.1%}"), ("mean_acceptance_length", "accept len", "AL", "{:.2f}"),
    ("mean_k", "mean k", "k", "{:.2f}"), ("speedup_vs_none", "E2E speedup*", "speedup*", "{:.2f}x"),
)
PRIORITY = ("completed", "failed", "speedup_vs_none", "request_goodput", "slo_attainment", "mean_e2el_ms",
            "mean_ttft_ms", "mean_tpot_ms", "p99_ttft_ms",
            "output_throughput", "p99_e2el_ms", "mean_itl_ms", "mean_acceptance_length", "mean_k")
SLO_COLUMNS = ("request_goodput", "slo_attainment")  # null without --slo: shown only when some policy has them
SUMMARY_FILE = "summary.json"


# ---- files ---------------------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """JSON values for a summary: NaN -> null, +-inf -> "inf"/"-inf" (vLLM's spelling), containers walked."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def write_result(result, directory: Path, spec: str, seed: int, run_info: dict | None = None) -> dict:
    """requests.csv, steps.parquet, then summary.json (last: its presence marks the policy finished); returns the
    summary.json record as written (JSON values: what a resumed run reads back)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SUMMARY_FILE).unlink(missing_ok=True)  # a rerun is unfinished until its own summary lands
    for name in (SUMMARY_FILE, "requests.csv", "steps.parquet"):  # temporaries of a killed earlier write
        for stale in directory.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    files = ["requests.csv"]
    write_atomic(directory / "requests.csv",
                 lambda tmp: result.requests.to_csv(tmp, index=False, float_format="%.9g"))
    if result.steps is not None:
        write_atomic(directory / "steps.parquet", lambda tmp: result.steps.to_parquet(tmp, index=False))
        files.append("steps.parquet")
    else:
        (directory / "steps.parquet").unlink(missing_ok=True)  # not this run's (--no-step-log)
    summary = {**summary_record(result, spec, seed, run_info), "files": files}
    text = json.dumps(json_safe(summary), indent=2, default=float, allow_nan=False) + "\n"
    write_text_atomic(directory / SUMMARY_FILE, text)
    return json.loads(text)


VOLATILE_KEYS = ("date", "command")  # when and how the run was started: differs between identical runs
VOLATILE_TRAFFIC_KEYS = ("trace_path",)  # where the checkout is


def stable_summary(summary: dict) -> dict:
    """A summary without the entries that differ between identical runs (for digests and comparisons)."""
    stable = {k: v for k, v in summary.items() if k not in VOLATILE_KEYS}
    if isinstance(stable.get("traffic"), dict):
        stable["traffic"] = {k: v for k, v in stable["traffic"].items() if k not in VOLATILE_TRAFFIC_KEYS}
    return stable


def finished_policies(out_dir: str | Path) -> set[str]:
    """Names of the policy directories in `out_dir` whose summary.json is readable and whose files all exist."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return set()
    done = set()
    for directory in out_dir.iterdir():
        try:
            summary = json.loads((directory / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            continue
        files = summary.get("files", ["requests.csv"]) if isinstance(summary, dict) else None
        if isinstance(files, list) and all((directory / str(f)).is_file() for f in files):
            done.add(directory.name)
    return done


# ---- the comparison ------------------------------------------------------------------------------
def _finished_ids(requests: pd.DataFrame | None) -> pd.Series | None:
    """request_id of each row and whether it finished (None if the table is missing)."""
    if requests is None or "status" not in requests or "request_id" not in requests:
        return None
    return pd.Series((requests["status"] == "finished").to_numpy(), index=requests["request_id"].to_numpy())


def common_completed(results: list) -> np.ndarray | None:
    """Row mask of the requests every result completed (rows matched by request_id and order), or None."""
    tables = [_finished_ids(getattr(r, "requests", None)) for r in results]
    if not tables or any(t is None for t in tables):
        return None
    first = tables[0]
    mask = first.to_numpy().copy()
    for other in tables[1:]:
        if len(other) != len(first) or not np.array_equal(other.index.to_numpy(), first.index.to_numpy()):
            return None  # not the same requests: nothing to compare row by row
        mask &= other.to_numpy()
    return mask


# A request's reason carries its own numbers; the warning counts reasons by kind (each named once).
REASON_KINDS = ((re.compile(r"^prompt of \d+ tokens \+ max_tokens \d+ exceeds max_model_len (\d+)$"),
                 r"prompt + max_tokens over max_model_len \1"),)
MAX_REASON_KINDS = 4  # kinds named in a warning; the rest are counted together


def reason_kind(reason: str) -> str:
    """A failure reason without the numbers of its request (`prompt of 9000 tokens + max_tokens 0 exceeds
    max_model_len 8192` -> `prompt + max_tokens over max_model_len 8192`); other reasons as they are."""
    if not reason or reason == "nan":
        return "unknown"
    for pattern, kind in REASON_KINDS:
        if pattern.match(reason):
            return pattern.sub(kind, reason)
    return reason


def failure_reasons(requests: pd.DataFrame | None, top: int = MAX_REASON_KINDS) -> str:
    """Each kind of failure reason once, with its count, commonest first: '2,739 prompt + max_tokens over
    max_model_len 8192'; kinds beyond `top` are counted together."""
    if requests is None or "status" not in requests or "reason" not in requests:
        return ""
    reasons = requests.loc[requests["status"] != "finished", "reason"].astype(str)
    counts = Counter(map(reason_kind, reasons)).most_common()
    parts = [f"{n:,} {why}" for why, n in counts[:top]]
    rest = sum(n for _, n in counts[top:])
    if rest:
        parts.append(f"{rest:,} for {len(counts) - top} other reason{'' if len(counts) - top == 1 else 's'}")
    return "; ".join(parts)


def comparison_frame(results: list, specs: list[str]) -> pd.DataFrame:
    """One row per policy with every summary metric, plus the speedup of mean E2E over the `none` run.

    The speedup (`speedup_vs_none`) is over the requests every policy completed (`speedup_requests`
    of them), so a policy is not credited for the requests it failed.
    """
    rows = [{"policy_spec": spec, **r.summary} for spec, r in zip(specs, results)]
    frame = pd.DataFrame(rows)
    frame["failure_reasons"] = [failure_reasons(getattr(r, "requests", None)) for r in results]
    if "none" not in list(frame["policy_spec"]):
        return frame
    mask = common_completed(results)
    if mask is None:  # no per-request tables to match: over each policy's own completed requests
        e2e = pd.to_numeric(frame["mean_e2el_ms"], errors="coerce").to_numpy()
        count = float("nan")
    else:
        e2e = np.array([_mean_e2el(r.requests, mask) for r in results])
        count = int(mask.sum())
    base = e2e[list(frame["policy_spec"]).index("none")]
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["speedup_vs_none"] = np.where((e2e > 0) & (base > 0), base / e2e, np.nan)
    frame["mean_e2el_common_ms"] = e2e
    frame["speedup_requests"] = count
    return frame


def _mean_e2el(requests: pd.DataFrame, mask: np.ndarray) -> float:
    values = pd.to_numeric(requests["e2el_ms"], errors="coerce").to_numpy()[mask]
    return float(values.mean()) if values.size else math.nan


def failure_warnings(frame: pd.DataFrame) -> list[str]:
    """One warning line per policy that failed requests; the last says what the speedups are over."""
    lines = []
    for _, row in frame.iterrows():
        failed = _number(row.get("failed"))
        if failed:
            total = failed + (_number(row.get("completed")) or 0)
            why = row.get("failure_reasons") or ""
            lines.append(f"warning: {row['policy_spec']}: {failed:,.0f} of {total:,.0f} requests failed"
                         + (f" ({why})" if why else ""))
    if lines and "speedup_requests" in frame:
        count = _number(frame["speedup_requests"].iloc[0])
        if count is not None:
            lines[-1] += f"; speedups are over the {count:,.0f} request{'' if count == 1 else 's'} every policy completed"
    return lines


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _table(frame: pd.DataFrame, keys: list[str], short: bool, title: str | None):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("policy", overflow="fold")
    columns = [c for c in TABLE_COLUMNS if c[0] in keys]
    for _, label, abbrev, _ in columns:
        table.add_column(abbrev if short else label, justify="right", no_wrap=True)
    for _, row in frame.iterrows():
        cells = []
        for key, _, _, fmt in columns:
            value = _number(row[key])
            cells.append("-" if value is None or math.isinf(value) else fmt.format(value))
        table.add_row(str(row["policy_spec"]), *cells)
    return table


def fitted_table(frame: pd.DataFrame, width: int, title: str | None):
    """The widest table that fits `width`: full labels, then short labels, then fewer columns by PRIORITY."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=10_000)  # measure unconstrained: Measurement.get clamps to the console width
    keys = shown_keys(frame)
    while True:
        for short in (False, True):
            table = _table(frame, keys, short, title)
            if Measurement.get(console, console.options, table).maximum <= width or len(keys) <= 3:
                return table, [k for k in shown_keys(frame) if k not in keys]
        keys = keys[:-1]


def shown_keys(frame: pd.DataFrame) -> list[str]:
    """The table's metrics by PRIORITY: those in `frame`, the SLO ones only where a value exists (--slo)."""
    return [k for k in PRIORITY if k in frame.columns
            and (k not in SLO_COLUMNS or pd.to_numeric(frame[k], errors="coerce").notna().any())]


def slo_note(slo_ms: dict[str, float] | None) -> str | None:
    """What the goodput columns count, for the note under the table (None without --slo)."""
    if not slo_ms:
        return None
    limits = ", ".join(f"{metric} <= {limit:g} ms" for metric, limit in slo_ms.items())
    return (f"goodput: requests per second meeting every SLO ({limits}), as vLLM --goodput; "
            f"SLO met: the share of completed requests meeting them")


def print_comparison(frame: pd.DataFrame, trace_label: str = "", console=None,
                     slo_ms: dict[str, float] | None = None) -> None:
    """The side-by-side table at the console's width, notes on what its columns count and what it hides, and
    failure warnings (stderr). With `slo_ms` (--slo) the table shows request goodput and SLO attainment."""
    from rich.console import Console

    console = console or Console()
    title = f"Simulated serving: {trace_label}" if trace_label else None
    table, hidden = fitted_table(frame, console.width, title)
    console.print(table)
    notes = []
    if "speedup_vs_none" in frame.columns and "speedup_vs_none" not in hidden:
        notes.append("* speedup of mean E2E over `none`, on the requests every policy completed")
    slo = slo_note(slo_ms)
    if slo and not {"request_goodput", "slo_attainment"} <= set(hidden):
        notes.append(slo)
    if hidden:
        notes.append(f"not shown at this width: {', '.join(hidden)} (all in comparison.csv)")
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)
    for line in failure_warnings(frame):
        print(line, file=sys.stderr)


# ---- progress ------------------------------------------------------------------------------------
@contextlib.contextmanager
def progress_reporter(total: int, label: str, disabled: bool = False, delay_s: float = 2.0,
                      console=None) -> Iterator:
    """Yields a callback(completed) that shows a transient bar with ETA once the run has lasted `delay_s`.

    With `disabled` (--quiet) it yields None and shows nothing.
    """
    if disabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    start = time.monotonic()
    state: dict[str, Any] = {}

    def tick(done: int) -> None:
        elapsed = time.monotonic() - start
        bar = state.get("bar")
        if bar is None:
            if elapsed < delay_s:
                return
            bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[elapsed]} elapsed, ETA"), TimeRemainingColumn(),
                           transient=True, console=console)
            bar.start()
            state["bar"], state["task"] = bar, bar.add_task(label, total=total, elapsed="")
        bar.update(state["task"], completed=done, elapsed=f"{int(elapsed) // 60}:{int(elapsed) % 60:02d}")

    try:
        yield tick
    finally:
        if state.get("bar") is not None:
            state["bar"].stop()


def pricing_lines(engine, results: list) -> str:
    """Where the step times come from (the run's calibration and its provenance) and what the policies priced with."""
    from specdec_sim.costmodel.calibration import provenance_line

    line = provenance_line(engine.calibration)
    summary = next((r.summary for r in results if r.summary), {})
    view = summary.get("policy_calibration")
    if view and view != "same":
        mape = summary.get("policy_calibration_fit_mape_pct")
        fit = f" (fit to the truth: {mape:.1f} % mean error)" if isinstance(mape, (int, float)) else ""
        line += f"\npolicies priced steps with: {view}{fit}"
    if engine.config.step_time_noise:
        line += f"\ntrue step times: log-normal noise, sigma {engine.config.step_time_noise:g}"
    return line

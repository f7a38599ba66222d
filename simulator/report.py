"""Writing and printing simulation results: files pandas reads, a side-by-side table, a progress bar."""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Iterator

import pandas as pd

TABLE_COLUMNS = (
    ("completed", "done", "{:.0f}"), ("failed", "failed", "{:.0f}"),
    ("mean_e2el_ms", "mean E2E ms", "{:.1f}"), ("p99_e2el_ms", "p99 E2E ms", "{:.1f}"),
    ("mean_ttft_ms", "mean TTFT ms", "{:.1f}"), ("p99_ttft_ms", "p99 TTFT ms", "{:.1f}"),
    ("mean_tpot_ms", "mean TPOT ms", "{:.2f}"), ("mean_itl_ms", "mean ITL ms", "{:.2f}"),
    ("output_throughput", "out tok/s", "{:.0f}"), ("mean_acceptance_length", "accept len", "{:.2f}"),
    ("mean_k", "mean k", "{:.2f}"), ("speedup_vs_none", "E2E speedup", "{:.2f}x"),
)


def comparison_frame(results: list, specs: list[str]) -> pd.DataFrame:
    """One row per policy with every summary metric, plus speedup of mean E2E over the `none` run."""
    rows = [{"policy_spec": spec, **r.summary} for spec, r in zip(specs, results)]
    frame = pd.DataFrame(rows)
    base = frame.loc[frame["policy_spec"] == "none", "mean_e2el_ms"]
    if len(base) and base.iloc[0] > 0:
        frame["speedup_vs_none"] = base.iloc[0] / frame["mean_e2el_ms"]
    return frame


def print_comparison(frame: pd.DataFrame, trace_label: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Simulated serving: {trace_label}" if trace_label else None)
    table.add_column("policy")
    columns = [c for c in TABLE_COLUMNS if c[0] in frame.columns]
    for _, label, _ in columns:
        table.add_column(label, justify="right")
    for _, row in frame.iterrows():
        cells = []
        for key, _, fmt in columns:
            value = row[key]
            cells.append("-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value))
        table.add_row(str(row["policy_spec"]), *cells)
    Console(width=200).print(table)


def write_result(result, directory: Path, spec: str, seed: int) -> None:
    """summary.json, requests.csv and steps.parquet for one run (the directory is created)."""
    directory.mkdir(parents=True, exist_ok=True)
    summary = {"policy_spec": spec, "seed": seed, **result.summary, "config": result.config.to_dict()}
    (directory / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    result.requests.to_csv(directory / "requests.csv", index=False, float_format="%.9g")
    if result.steps is not None:
        result.steps.to_parquet(directory / "steps.parquet", index=False)


@contextlib.contextmanager
def progress_reporter(total: int, label: str, disabled: bool = False) -> Iterator:
    """Yields a callback(completed) that advances a rich progress bar (or does nothing)."""
    if disabled or total < 2000:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.update(task, completed=done)

"""The tables `sweep` prints: per configuration, the mean (±std) over seeds, and the seed count.

`print_table` shows a run sweep (`plots.mean_over_seeds`); `print_capacity` a capacity search
(`capacity.capacity_summary`) plus its warnings. Only configuration columns that vary are shown;
rich fits the table to the terminal width.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

CONFIG_COLUMNS = {"trace", "rate", "time_scale", "calibration", "replicas", "policy"}
CAPACITY_HIDDEN = {"capacity_mean", "capacity_std", "capacity_min", "capacity_max", "seeds", "search_status",
                   "trace", "calibration", "replicas", "policy"}


def _ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if len(df) else df


def seed_text(counts) -> str:
    """`3 seeds`, `1 seed`, or `2-3 seeds` when configurations differ."""
    counts = sorted(set(int(n) for n in counts))
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{n} seed{'' if counts == [1] else 's'}"


def print_table(df: pd.DataFrame) -> None:
    """Per-configuration mean (±std) over seeds, showing only the config columns that vary."""
    from specdec_sim.simulator.sweep.plots import format_mean_std, mean_over_seeds

    ok = _ok_rows(df)
    if ok.empty:
        return
    view = mean_over_seeds(ok)
    single = set(view["seeds"]) == {1}
    metrics = [c for c in view.columns if f"{c}_std" in view.columns]
    keep = [c for c in view.columns if c != "seeds" and c not in metrics and not c.endswith("_std")
            and (c == "policy" or c not in CONFIG_COLUMNS or view[c].nunique(dropna=False) > 1)]
    cells = {m: [format_mean_std(a, b, single) for a, b in zip(view[m], view[f"{m}_std"])] for m in metrics}
    _rich_table(f"mean over {seed_text(view['seeds'])}" + ("" if single else " (±std)"), view[keep], cells)


def print_capacity(df: pd.DataFrame) -> None:
    """Capacity per configuration: mean (±std) over seeds, min-max, statuses; then any warnings."""
    from specdec_sim.simulator.sweep.capacity import capacity_summary
    from specdec_sim.simulator.sweep.plots import format_mean_std

    ok = _ok_rows(df)
    if ok.empty:
        return
    warnings = ok["warning"].dropna() if "warning" in ok else pd.Series(dtype=str)
    for warning in sorted(set(w for w in warnings if isinstance(w, str) and w)):
        print(f"sweep: warning: {warning}", file=sys.stderr)
    view = capacity_summary(ok)
    single = set(view["seeds"]) == {1}
    keep = [c for c in ("trace", "calibration", "replicas", "policy") if c in view
            and (c == "policy" or view[c].nunique(dropna=False) > 1)]
    keep += [c for c in view.columns if c not in CAPACITY_HIDDEN and view[c].nunique(dropna=False) > 1]
    cells = {"capacity (req/s)": [format_mean_std(a, b, single)
                                  for a, b in zip(view["capacity_mean"], view["capacity_std"])],
             "min-max": [f"{a:.3g}-{b:.3g}" for a, b in zip(view["capacity_min"], view["capacity_max"])],
             "search": list(view["search_status"])}
    title = f"capacity: mean over {seed_text(view['seeds'])}" + ("" if single else " (±std)")
    _rich_table(title, view[keep], cells)


def _rich_table(title: str, config: pd.DataFrame, cells: dict[str, list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in [*config.columns, *cells]:
        table.add_column(str(col), justify="right")
    for i, row in enumerate(config.itertuples(index=False)):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else Path(str(v)).name for v in row),
                      *(cells[c][i] for c in cells))
    Console().print(table)

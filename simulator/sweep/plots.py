"""Sweep figures (matplotlib, Agg backend, PNG).

* `plot_latency_vs_rate`: mean and p99 end-to-end latency vs request rate, one line per policy,
* `plot_speedup_vs_rate`: mean E2E latency of `none` divided by each policy's, vs rate,
* `plot_timeline`: chosen proposal length k and the policy's estimated acceptance over time
  for one run (from `SimResult.steps`),
* `plot_capacity`: capacity per policy from a capacity-search table (mean over seeds, ±std bars),
* `mean_over_seeds`: mean and std over seeds of a few metrics per configuration, with the seed count,
* `plot_sweep`: the first two for a result table, one pair per (trace, calibration, replicas).

Every curve is the mean over seeds with a band of ±1 standard deviation over seeds (titles say how
many seeds); axes are widened to the tick enclosing the data, and every title carries its units.
Rate on the x axis is the Poisson `rate` of the run when set, else the trace's offered rate.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Iterable

import matplotlib
import matplotlib.ticker
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

GROUP_KEYS = ("trace", "calibration", "replicas")
BASELINE = "none"


def _x_column(df: pd.DataFrame) -> str:
    if "rate" in df and df["rate"].notna().any():
        return "rate"
    return "offered_rate"


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if "status" in df else df


def rate_curves(df: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """Per (policy, x), x the rate column, sorted by x: the mean over seeds of each metric (under its
    own name), its std over seeds (`METRIC_std`, 0 for one seed) and the number of seeds (`seeds`)."""
    df = _ok(df)
    x = _x_column(df)
    cols = [m for m in metrics if m in df]
    grouped = df.groupby(["policy", x], dropna=True)
    out = grouped[cols].mean()
    spread = grouped[cols].std(ddof=1).fillna(0.0).add_suffix("_std")
    out = out.join(spread).join(grouped.size().rename("seeds")).reset_index()
    return out.rename(columns={x: "x"}).sort_values(["policy", "x"])


def speedup_table(df: pd.DataFrame, metric: str = "mean_e2el_ms") -> pd.DataFrame:
    """Per (policy, x): baseline latency / policy latency (>1 means the policy is faster), the ratio of
    the means over seeds; `speedup_std` is the std over seeds of the per-seed ratio (same seed = same
    requests under both policies)."""
    curves = rate_curves(df, [metric])
    base = curves[curves["policy"] == BASELINE].set_index("x")[metric]
    if base.empty:
        raise ValueError(f"speedup needs runs of the {BASELINE!r} policy")
    curves = curves[curves["policy"] != BASELINE].copy()
    curves["speedup"] = base.reindex(curves["x"]).to_numpy() / curves[metric].to_numpy()
    spread = _per_seed_speedup(_ok(df), metric)
    curves["speedup_std"] = [spread.get((p, x), 0.0) for p, x in zip(curves["policy"], curves["x"])]
    return curves.dropna(subset=["speedup"])


def _per_seed_speedup(df: pd.DataFrame, metric: str) -> dict[tuple[str, float], float]:
    """(policy, x) -> std over seeds of baseline / policy for the same seed."""
    if "seed" not in df:
        return {}
    x = _x_column(df)
    table = df.pivot_table(index=[x, "seed"], columns="policy", values=metric, aggfunc="mean")
    if BASELINE not in table:
        return {}
    ratios = table.drop(columns=BASELINE).rdiv(table[BASELINE], axis=0)
    std = ratios.groupby(level=0).std(ddof=1).fillna(0.0)
    return {(p, xv): float(std.at[xv, p]) for p in std.columns for xv in std.index}


def format_mean_std(mean: float, std: float, single: bool = False) -> str:
    """`12.3 ±0.4` (just `12.3` for a single seed)."""
    if mean != mean:
        return "nan"
    return f"{mean:.4g}" if single else f"{mean:.4g} ±{std:.2g}"


def _seeds_note(seeds: Iterable[int]) -> str:
    counts = sorted(set(int(n) for n in seeds))
    if not counts:
        return ""
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"mean over {n} seed{'s' if counts != [1] else ''}" + (", band ±1 std" if counts != [1] else "")


def _cover(ax, values: np.ndarray, axis: str = "y") -> None:
    """Widen the axis to the ticks enclosing the data, so tick labels do not stop short of it."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    get_scale = ax.get_yscale if axis == "y" else ax.get_xscale
    set_lim = ax.set_ylim if axis == "y" else ax.set_xlim
    target = ax.yaxis if axis == "y" else ax.xaxis
    if get_scale() == "log":
        lo, hi = max(lo, 1e-12), max(hi, 1e-12)
        ticks = _nice_log_ticks(lo, hi)
        target.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        target.set_minor_locator(matplotlib.ticker.NullLocator())
        target.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        set_lim(ticks[0], ticks[-1])
        return
    if hi == lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    locator = matplotlib.ticker.MaxNLocator(nbins=6)
    ticks = locator.tick_values(lo, hi)
    target.set_major_locator(locator)  # the same ticks, so the limits are labelled ticks
    below, above = ticks[ticks <= lo], ticks[ticks >= hi]
    set_lim(float(below.max()) if below.size else lo, float(above.min()) if above.size else hi)


def _nice_log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks from the largest one <= lo to the smallest one >= hi."""
    ticks: list[float] = []
    for exp in range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1):
        ticks += [m * 10.0 ** exp for m in (1, 2, 5)]
    below = [t for t in ticks if t <= lo * (1 + 1e-9)]
    above = [t for t in ticks if t >= hi * (1 - 1e-9)]
    return [t for t in ticks if below[-1] <= t <= above[0]]


def _policy_order(policies: Iterable[str]) -> list[str]:
    return sorted(set(policies), key=lambda p: (p != BASELINE, p))


def _title(df: pd.DataFrame, what: str) -> str:
    parts = [f"{k}={Path(str(df[k].iloc[0])).name}" for k in GROUP_KEYS if k in df and len(df)]
    return f"{what}\n" + "\n".join(textwrap.wrap(", ".join(parts), 70)) if parts else what


def _xlabel(df: pd.DataFrame) -> str:
    return "Poisson request rate (req/s)" if _x_column(_ok(df)) == "rate" else "offered rate (req/s)"


def _band(ax, x, mean, std, **style):
    line, = ax.plot(x, mean, marker="o", ms=4, **style)
    if np.any(np.asarray(std) > 0):
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.18, lw=0)
    return line


def plot_latency_vs_rate(df: pd.DataFrame, path: str | Path) -> Path:
    """Mean and p99 E2E latency vs request rate per policy (two panels, log-scale y, ±std bands)."""
    curves = rate_curves(df, ["mean_e2el_ms", "p99_e2el_ms"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, metric, label in zip(axes, ("mean_e2el_ms", "p99_e2el_ms"), ("mean", "p99")):
        shown = []
        for policy in _policy_order(curves["policy"]):
            c = curves[curves["policy"] == policy]
            mean, std = c[metric] / 1000.0, c[f"{metric}_std"] / 1000.0
            _band(ax, c["x"], mean, std, label=policy, ls="--" if policy == BASELINE else "-",
                  color="black" if policy == BASELINE else None)
            shown += [mean - std, mean + std]
        ax.set_yscale("log")
        _cover(ax, np.concatenate([np.clip(v.to_numpy(), 1e-6, None) for v in shown]), "y")
        _cover(ax, curves["x"].to_numpy(), "x")
        ax.set_xlabel(_xlabel(df))
        ax.set_ylabel(f"{label} end-to-end latency (s)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(_title(_ok(df), f"E2E latency (s) vs load (req/s), {_seeds_note(curves['seeds'])}"))
    return _save(fig, path)


def plot_speedup_vs_rate(df: pd.DataFrame, path: str | Path, metric: str = "mean_e2el_ms") -> Path:
    """Speedup over `none` (mean E2E latency ratio) vs request rate, one line per policy, ±std bands."""
    table = speedup_table(df, metric)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for policy in _policy_order(table["policy"]):
        t = table[table["policy"] == policy]
        _band(ax, t["x"], t["speedup"], t["speedup_std"], label=policy)
    ax.axhline(1.0, color="black", ls="--", lw=1, label=f"{BASELINE} (1.0)")
    spread = np.concatenate([(table["speedup"] - table["speedup_std"]).to_numpy(),
                             (table["speedup"] + table["speedup_std"]).to_numpy(), [1.0]])
    _cover(ax, spread, "y")
    _cover(ax, table["x"].to_numpy(), "x")
    ax.set_xlabel(_xlabel(df))
    ax.set_ylabel(f"speedup over {BASELINE} (x, {metric.replace('_ms', '')} ratio)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(_title(_ok(df), f"Speculation speedup (x) vs load (req/s), {_seeds_note(table['seeds'])}"))
    return _save(fig, path)


def plot_timeline(steps: pd.DataFrame, path: str | Path, title: str = "", window: int = 50) -> Path:
    """Chosen k (mean and max per step, rolling mean) and estimated acceptance over simulated time."""
    if steps is None or steps.empty:
        raise ValueError("timeline plot needs a run recorded with record_steps=True")
    s = steps.sort_values("start_s")
    fig, (ax_k, ax_a) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    for replica, r in s.groupby("replica") if "replica" in s else [(0, s)]:
        tag = f" (replica {replica})" if s["replica"].nunique() > 1 else ""
        ax_k.plot(r["start_s"], r["k_mean"].rolling(window, min_periods=1).mean(), lw=1.2,
                  label=f"mean k, rolling {window} steps{tag}")
        if "num_prefill" in r:  # V0 engines do not speculate in steps that carry prefill
            dec = r[r["num_prefill"] == 0]
            ax_k.plot(dec["start_s"], dec["k_mean"].rolling(window, min_periods=1).mean(), lw=0.8,
                      alpha=0.7, ls="--", label=f"mean k, decode-only steps{tag}")
        if "est_alpha" in r and r["est_alpha"].notna().any():
            ax_a.plot(r["start_s"], r["est_alpha"], lw=1.2, label=f"estimated acceptance{tag}")
        if {"proposed", "accepted"} <= set(r.columns):
            prop = r["proposed"].rolling(window, min_periods=1).sum()
            acc = r["accepted"].rolling(window, min_periods=1).sum()
            ax_a.plot(r["start_s"], (acc / prop.where(prop > 0)), lw=0.8, alpha=0.6,
                      label=f"observed acceptance, rolling {window}{tag}")
    ax_k.set_ylabel("proposal length k")
    ax_a.set_ylabel("acceptance rate")
    ax_a.set_ylim(0, 1.02)
    ax_a.set_xlabel("simulated time (s)")
    for ax in (ax_k, ax_a):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title or "Chosen k and estimated acceptance over time")
    return _save(fig, path)


def plot_capacity(df: pd.DataFrame, path: str | Path) -> Path:
    """Capacity (highest rate meeting the SLO) per policy: mean over seeds, ±std error bars."""
    from specdec_sim.simulator.sweep.capacity import capacity_summary

    ok = capacity_summary(_ok(df))
    ok = ok.sort_values("policy", key=lambda p: p.map(lambda v: (v != BASELINE, v)))
    labels = [str(p) for p in ok["policy"]]
    if len(set(labels)) < len(labels):  # several configurations per policy: label by row
        labels = [f"{p} #{i}" for i, p in enumerate(labels)]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bars = ax.bar(labels, ok["capacity_mean"], yerr=ok["capacity_std"], capsize=4,
                  color=["black" if p == BASELINE else "C0" for p in ok["policy"]])
    for bar, status in zip(bars, ok["search_status"]):
        note = "" if status == "ok" else f" ({status})"
        ax.annotate(f"{bar.get_height():.2f}{note}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    _cover(ax, np.concatenate([[0.0], (ok["capacity_mean"] + ok["capacity_std"]).to_numpy() * 1.08]), "y")
    ax.set_ylabel("capacity (req/s)")
    ax.grid(alpha=0.3, axis="y")
    slo = ok["slo"].iloc[0] if "slo" in ok and len(ok) else ""
    slo_text = ",".join(f"{item} ms" for item in str(slo).split(",")) if slo else ""
    fig.suptitle(_title(ok, f"Highest Poisson rate (req/s) meeting the SLO {slo_text}, "
                            f"{_seeds_note(ok['seeds']).replace('band', 'bars')}"))
    return _save(fig, path)


def plot_sweep(df: pd.DataFrame, out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Latency and speedup figures for each (trace, calibration, replicas, engine-axis value) group."""
    out = Path(out_dir)
    ok = _ok(df)
    keys = [k for k in GROUP_KEYS if k in ok] + _varying_engine_columns(ok)
    groups = list(ok.groupby(keys, dropna=False)) if keys else [((), ok)]
    paths: list[Path] = []
    for key, group in groups:
        stem = prefix + ("_".join(_slug(v) for v in (key if isinstance(key, tuple) else (key,))) or "sweep")
        if group[_x_column(group)].notna().sum() == 0:
            continue
        paths.append(plot_latency_vs_rate(group, out / f"{stem}_latency_vs_rate.png"))
        if BASELINE in set(group["policy"]) and group["policy"].nunique() > 1:
            paths.append(plot_speedup_vs_rate(group, out / f"{stem}_speedup_vs_rate.png"))
    return paths


def _slug(value: object) -> str:
    text = Path(str(value)).stem if "/" in str(value) else str(value)
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in text)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mean_over_seeds(df: pd.DataFrame, metrics: Iterable[str] = ("mean_e2el_ms", "p99_e2el_ms",
                                                           "output_throughput", "mean_k")) -> pd.DataFrame:
    """Per (trace, rate, time_scale, policy, calibration, replicas and any engine-axis column): the
    mean over seeds of each metric (under its own name), its std over seeds (`METRIC_std`, ddof=1,
    0 for one seed), and the number of seeds (`seeds`)."""
    ok = df[df["status"] == "ok"]
    keys = [k for k in ("trace", "rate", "time_scale", "calibration", "replicas", "policy") if k in ok]
    keys += [k for k in _varying_engine_columns(ok) if k not in keys]
    cols = [m for m in metrics if m in ok]
    grouped = ok.groupby(keys, dropna=False)
    out = grouped[cols].mean().join(grouped.size().rename("seeds"))
    out = out.join(grouped[cols].std(ddof=1).fillna(0.0).add_suffix("_std")).reset_index()
    return out[keys + ["seeds"] + [c for m in cols for c in (m, f"{m}_std")]]


def _varying_engine_columns(ok: pd.DataFrame) -> list[str]:
    """SimConfig option columns (an engine axis) that take more than one value in the table."""
    from dataclasses import fields

    from specdec_sim.simulator.config import SimConfig

    names = {f.name for f in fields(SimConfig)} - {"calibration", "replicas"}
    return [c for c in ok.columns if c in names and ok[c].nunique(dropna=False) > 1]

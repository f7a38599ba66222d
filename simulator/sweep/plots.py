"""Sweep figures (matplotlib, Agg backend, PNG).

* `plot_latency_vs_rate`: mean and p99 end-to-end latency vs request rate, one line per policy,
* `plot_speedup_vs_rate`: mean E2E latency of `none` divided by each policy's, vs rate,
* `plot_timeline`: chosen proposal length k and the policy's estimated acceptance over time
  for one run (from `SimResult.steps`),
* `plot_capacity`: capacity per policy from a capacity-search table,
* `summarize`: the mean over seeds of a few metrics per configuration (a compact table),
* `plot_sweep`: the first two for a result table, one pair per (trace, calibration, replicas).

Rate on the x axis is the Poisson `rate` of the run when set, else the trace's offered rate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import matplotlib
import matplotlib.ticker

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
    """Mean over seeds of `metrics` per (policy, x) with x the rate column; sorted by x."""
    df = _ok(df)
    x = _x_column(df)
    cols = [m for m in metrics if m in df]
    out = df.groupby(["policy", x], dropna=True)[cols].mean().reset_index()
    return out.rename(columns={x: "x"}).sort_values(["policy", "x"])


def speedup_table(df: pd.DataFrame, metric: str = "mean_e2el_ms") -> pd.DataFrame:
    """Per (policy, x): baseline latency / policy latency (>1 means the policy is faster)."""
    curves = rate_curves(df, [metric])
    base = curves[curves["policy"] == BASELINE].set_index("x")[metric]
    if base.empty:
        raise ValueError(f"speedup needs runs of the {BASELINE!r} policy")
    curves = curves[curves["policy"] != BASELINE].copy()
    curves["speedup"] = base.reindex(curves["x"]).to_numpy() / curves[metric].to_numpy()
    return curves.dropna(subset=["speedup"])


def _policy_order(policies: Iterable[str]) -> list[str]:
    return sorted(set(policies), key=lambda p: (p != BASELINE, p))


def _title(df: pd.DataFrame, what: str) -> str:
    parts = [f"{k}={Path(str(df[k].iloc[0])).name}" for k in GROUP_KEYS if k in df and len(df)]
    return f"{what}\n" + " / ".join(parts) if parts else what


def _xlabel(df: pd.DataFrame) -> str:
    return "Poisson request rate (req/s)" if _x_column(_ok(df)) == "rate" else "offered rate (req/s)"


def plot_latency_vs_rate(df: pd.DataFrame, path: str | Path) -> Path:
    """Mean and p99 E2E latency vs request rate per policy (two panels, log-scale y)."""
    curves = rate_curves(df, ["mean_e2el_ms", "p99_e2el_ms"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, metric, label in zip(axes, ("mean_e2el_ms", "p99_e2el_ms"), ("mean", "p99")):
        for policy in _policy_order(curves["policy"]):
            c = curves[curves["policy"] == policy]
            ax.plot(c["x"], c[metric] / 1000.0, marker="o", ms=4, label=policy,
                    ls="--" if policy == BASELINE else "-", color="black" if policy == BASELINE else None)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel(_xlabel(df))
        ax.set_ylabel(f"{label} end-to-end latency (s)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(_title(_ok(df), "E2E latency vs load"))
    return _save(fig, path)


def plot_speedup_vs_rate(df: pd.DataFrame, path: str | Path, metric: str = "mean_e2el_ms") -> Path:
    """Speedup over `none` (mean E2E latency ratio) vs request rate, one line per policy."""
    table = speedup_table(df, metric)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for policy in _policy_order(table["policy"]):
        t = table[table["policy"] == policy]
        ax.plot(t["x"], t["speedup"], marker="o", ms=4, label=policy)
    ax.axhline(1.0, color="black", ls="--", lw=1, label=f"{BASELINE} (1.0)")
    ax.set_xlabel(_xlabel(df))
    ax.set_ylabel(f"speedup over {BASELINE} ({metric.replace('_ms', '')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(_title(_ok(df), "Speculation speedup vs load"))
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
    """Capacity (highest rate meeting the SLO) per policy, from a capacity-search table."""
    ok = _ok(df).sort_values("policy", key=lambda p: p.map(lambda v: (v != BASELINE, v)))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bars = ax.bar(ok["policy"], ok["capacity_rps"], color=["black" if p == BASELINE else "C0" for p in ok["policy"]])
    for bar, status in zip(bars, ok.get("search_status", [""] * len(ok))):
        note = "" if status == "ok" else f" ({status})"
        ax.annotate(f"{bar.get_height():.2f}{note}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("capacity (req/s)")
    ax.grid(alpha=0.3, axis="y")
    slo = ok["slo"].iloc[0] if "slo" in ok and len(ok) else ""
    fig.suptitle(_title(ok, f"Highest Poisson rate meeting the SLO {slo}"))
    return _save(fig, path)


def plot_sweep(df: pd.DataFrame, out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Latency and speedup figures for each (trace, calibration, replicas) group of a table."""
    out = Path(out_dir)
    ok = _ok(df)
    keys = [k for k in GROUP_KEYS if k in ok]
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


def summarize(df: pd.DataFrame, metrics: Iterable[str] = ("mean_e2el_ms", "p99_e2el_ms",
                                                           "output_throughput", "mean_k")) -> pd.DataFrame:
    """Mean of the given metrics over seeds, per (trace, rate, time_scale, policy, calibration, replicas)."""
    ok = df[df["status"] == "ok"]
    keys = [k for k in ("trace", "rate", "time_scale", "calibration", "replicas", "policy") if k in ok]
    cols = [m for m in metrics if m in ok]
    return ok.groupby(keys, dropna=False)[cols].mean().reset_index()

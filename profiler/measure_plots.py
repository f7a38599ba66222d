"""PNG plots of a profile: latency vs batch size per query length, and measured vs predicted.

Each PNG is written to a temporary name and renamed into place, so an interrupted run never
leaves half an image under the final name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from specdec_sim.profiler.measure_fit import merge_passes, predict_ms, samples_from_rows
from specdec_sim.costmodel import ForwardCoefficients  # noqa: E402
from specdec_sim.safe_output import write_atomic  # noqa: E402


def _ok(rows: Sequence[dict], role: str) -> list[dict]:
    return [r for r in rows if r["role"] == role and r.get("status", "ok") == "ok"]


def plot_latency_curves(rows: Sequence[dict], role: str, coef: ForwardCoefficients | None, path: Path) -> Path:
    """One panel per context length: measured median latency vs batch size, one line per query length,
    with the fitted model dashed."""
    ok = [r for r in _ok(rows, role) if r["kind"] != "prefill"]
    contexts = sorted({int(r["context"]) for r in ok})
    fig, axes = plt.subplots(1, max(1, len(contexts)), figsize=(4.2 * max(1, len(contexts)), 3.6),
                             squeeze=False, sharey=True)
    for ax, ctx in zip(axes[0], contexts):
        for q in sorted({int(r["query"]) for r in ok}):
            pts = sorted((int(r["batch"]), float(r["median_ms"])) for r in ok
                         if int(r["context"]) == ctx and int(r["query"]) == q)
            if not pts:
                continue
            b, ms = np.array(pts).T
            line = ax.plot(b, ms, "o-", label=f"query {q}")[0]
            if coef is not None:
                pred = [coef.forward_ms(bb * q, bb * ctx, int(bb)) for bb in b]
                ax.plot(b, pred, "--", color=line.get_color(), alpha=0.7)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{role} forward, context {ctx} tokens per sequence", fontsize=9)
        ax.set_xlabel("batch size (sequences)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("forward latency (ms)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_measured_vs_predicted(rows: Sequence[dict], fits: dict[str, ForwardCoefficients], path: Path) -> Path:
    """Scatter of measured vs predicted latency for every role, with the y = x line."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    lo, hi = np.inf, 0.0
    for role, coef in fits.items():
        s = samples_from_rows(rows, role)
        if not len(s):
            continue
        pred = predict_ms(coef, s)
        ax.scatter(s.ms, pred, s=12, label=role, alpha=0.7)
        lo, hi = min(lo, s.ms.min(), pred.min()), max(hi, s.ms.max(), pred.max())
    if hi > 0:
        lo = max(lo, 1e-3)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_title("forward latency: measured vs fitted (ms)", fontsize=9)
    ax.set_xlabel("measured (ms)")
    ax.set_ylabel("predicted by calibration (ms)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Save `fig` as PNG atomically (temporary name, then rename)."""
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
    return path


def write_plots(rows: Sequence[dict], fits: dict[str, ForwardCoefficients], out: Path) -> list[Path]:
    rows = merge_passes(rows)
    paths = [plot_latency_curves(rows, role, coef, out / f"latency_{role}.png") for role, coef in fits.items()]
    paths.append(plot_measured_vs_predicted(rows, fits, out / "measured_vs_predicted.png"))
    return paths

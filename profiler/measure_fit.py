"""Fit the simulator's forward-pass cost model to measured latencies (pure numpy, no torch).

Model (specdec_sim.costmodel.ForwardCoefficients, milliseconds):

    t = fixed + per_kv_token * N_kv + per_batched_token * N_batched + per_seq * B
        + after_knee * max(0, N_batched - knee_tokens) + prefill_attention * A

with N_batched = B * query, N_kv = B * context and, for prefill points only,
A = B * chunk * (context + chunk / 2). For each candidate knee (the measured N_batched values)
the fit is a weighted least squares (weights 1/t, so relative error is what is minimised) with
every term bounded below: each is a cost, so fixed >= FIXED_FLOOR_MS > 0 and the KV, token,
sequence and attention terms >= 0; the token slope before the knee and the slope after it are
both >= 0 (fitted as b1 * min(N, knee) + b2 * max(0, N - knee), so after_knee = b2 - b1 may be
negative: CPU batch 1 runs a GEMV, bigger batches a GEMM). The bounded problem has at most six
columns and is solved exactly (`nonnegative_lstsq`: the optimum is the unconstrained fit on its
own support, so the best feasible subset fit is it). A fit therefore prices every shape at
>= fixed > 0, and every calibration it makes loads. The knee with the smallest error is kept, or
none when no knee cuts the error by 0.1 %. Columns the grid cannot tell apart (e.g. B and
N_batched when every query is 1) are dropped (coefficient 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from specdec_sim.costmodel import ForwardCoefficients
from specdec_sim.costmodel.lstsq import nonnegative_lstsq

COLUMNS = ("fixed_ms", "per_kv_token_ms", "per_batched_token_ms", "per_seq_ms", "prefill_attention_ms")
HOLDOUT_FRACTION = 0.2
MIN_KNEE_GAIN = 1e-3  # a knee must cut the relative squared error by 0.1 % to be kept


@dataclass(frozen=True)
class Samples:
    """Measured points of one model role as arrays (one entry per grid point)."""

    batched: np.ndarray
    kv: np.ndarray
    seqs: np.ndarray
    attn2: np.ndarray
    ms: np.ndarray

    def __len__(self) -> int:
        return len(self.ms)

    def take(self, idx: np.ndarray) -> "Samples":
        return Samples(self.batched[idx], self.kv[idx], self.seqs[idx], self.attn2[idx], self.ms[idx])


def merge_passes(rows: Iterable[dict]) -> list[dict]:
    """One row per point: with several passes (--passes), median_ms becomes the median over passes,
    p10/p90 the lowest/highest; a point counts as skipped only if no pass measured it."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["role"], r.get("kind"), int(r["batch"]), int(r["query"]), int(r["context"]))
        groups.setdefault(key, []).append(r)
    merged = []
    for group in groups.values():
        ok = [r for r in group if r.get("status", "ok") == "ok"]
        if not ok:
            merged.append(dict(group[0], passes=len(group)))
            continue
        ms = [float(r["median_ms"]) for r in ok]
        merged.append(dict(ok[0], median_ms=float(np.median(ms)), passes=len(ok),
                           p10_ms=min(float(r.get("p10_ms") or m) for r, m in zip(ok, ms)),
                           p90_ms=max(float(r.get("p90_ms") or m) for r, m in zip(ok, ms))))
    return merged


def samples_from_rows(rows: Iterable[dict], role: str) -> Samples:
    """Samples of one role from measurement rows (dicts as csv.DictReader gives them); skipped rows dropped."""
    pts = []
    for r in rows:
        if r.get("role") != role or r.get("status", "ok") != "ok":
            continue
        b, q, c = int(r["batch"]), int(r["query"]), int(r["context"])
        attn2 = b * q * (c + q / 2.0) if r.get("kind") == "prefill" else 0.0
        pts.append((b * q, b * c, b, attn2, float(r["median_ms"])))
    a = np.asarray(pts, dtype=float).reshape(-1, 5)
    return Samples(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4])


def design(s: Samples) -> np.ndarray:
    return np.column_stack([np.ones(len(s)), s.kv, s.batched, s.seqs, s.attn2])


def independent_columns(a: np.ndarray) -> list[int]:
    """Indices of columns kept in order, each kept only if it adds rank (after scaling to max |1|)."""
    scaled = a / np.maximum(np.abs(a).max(axis=0), 1e-300)
    keep: list[int] = []
    for j in range(a.shape[1]):
        if not np.any(a[:, j]):
            continue
        if np.linalg.matrix_rank(scaled[:, keep + [j]], tol=1e-9 * len(a)) == len(keep) + 1:
            keep.append(j)
    return keep


def _scaled(a: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows weighted by 1/y, columns scaled to max |1|; returns (scaled matrix, column scales)."""
    aw = a / y[:, None]
    scale = np.maximum(np.abs(aw).max(axis=0), 1e-300)
    return aw / scale, scale


def bounded_lstsq(a: np.ndarray, y: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, float]:
    """argmin_x sum(((a x - y) / y)^2) subject to x >= lower; returns (x, relative SSE)."""
    aw, scale = _scaled(a, y)
    shifted = np.ones_like(y) - (a @ lower) / y  # x = lower + z, z >= 0
    x = lower + nonnegative_lstsq(aw, shifted) / scale
    resid = (a @ x - y) / y
    return x, float(resid @ resid)


def knee_candidates(batched: np.ndarray, min_each_side: int = 2) -> list[float]:
    values = np.unique(batched)
    return [float(v) for v in values[min_each_side - 1:len(values) - min_each_side]]


FIXED_FLOOR_MS = 1e-6  # a forward costs more than nothing (the cost model needs target time > 0)


def solve(base: np.ndarray, cols: list[int], knee: float | None, batched: np.ndarray,
          y: np.ndarray) -> tuple[dict[int, float], float, float]:
    """Bounded weighted least squares on base[:, cols] (+ the hinge at `knee`): fixed >= FIXED_FLOOR_MS,
    every other term >= 0; with a knee, the token column becomes min(N, knee) and the hinge
    max(0, N - knee), both slopes >= 0. Returns ({col: coef}, after_knee slope, relative SSE)."""
    a = base[:, cols].copy()
    token = cols.index(2) if 2 in cols else None
    if knee is not None:
        if token is not None:
            a[:, token] = np.minimum(batched, knee)
        a = np.column_stack([a, np.maximum(0.0, batched - knee)])
    lower = np.array([FIXED_FLOOR_MS if j == 0 else 0.0 for j in cols] + ([0.0] if knee is not None else []))
    x, sse = bounded_lstsq(a, y, lower)
    coefs = {j: float(v) for j, v in zip(cols, x)}
    if knee is None:
        return coefs, 0.0, sse
    slope = float(x[-1]) - (coefs[2] if token is not None else 0.0)
    return coefs, slope, sse


def fit_forward(s: Samples, knees: Sequence[float] | None = None) -> ForwardCoefficients:
    """Bounded fit of ForwardCoefficients, searching the knee over `knees` (default: measured N_batched)."""
    if len(s) == 0:
        raise ValueError("no measured points to fit")
    if not np.all(np.isfinite(s.ms) & (s.ms > 0)):
        raise ValueError("measured latencies must be finite and > 0 ms")
    base = design(s)
    keep = independent_columns(base)  # always starts with the fixed term (column of ones)
    best, best_slope, best_sse = solve(base, keep, None, s.batched, s.ms)
    best_knee = 0.0
    for knee in (knee_candidates(s.batched) if knees is None else knees):
        hinge = np.maximum(0.0, s.batched - knee)
        if np.count_nonzero(hinge) == 0 or np.count_nonzero(hinge) == len(hinge):
            continue
        if independent_columns(np.column_stack([base[:, keep], hinge])) != list(range(len(keep) + 1)):
            continue
        coefs, slope, sse = solve(base, keep, knee, s.batched, s.ms)
        if slope != 0 and sse < best_sse * (1 - MIN_KNEE_GAIN) - 1e-12:
            best, best_slope, best_sse, best_knee = coefs, slope, sse, knee
    values = dict.fromkeys(COLUMNS, 0.0)
    for j, coef in best.items():
        values[COLUMNS[j]] = float(coef)
    return ForwardCoefficients(knee_tokens=best_knee if best_slope else 0.0, after_knee_ms=best_slope, **values)


def predict_ms(coef: ForwardCoefficients, s: Samples) -> np.ndarray:
    """What the simulator's cost model says for each point (same formula, same code)."""
    return np.array([coef.forward_ms(b, kv, int(n), False, a2)
                     for b, kv, n, a2 in zip(s.batched, s.kv, s.seqs, s.attn2)])


def ape_pct(coef: ForwardCoefficients, s: Samples) -> np.ndarray:
    return np.abs(predict_ms(coef, s) - s.ms) / s.ms * 100.0


def split(n: int, seed: int, fraction: float = HOLDOUT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test indices; no test set when there are too few points to spare any."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(fraction * n)) if n >= 8 else 0
    return np.sort(order[n_test:]), np.sort(order[:n_test])


@dataclass(frozen=True)
class RoleFit:
    coefficients: ForwardCoefficients
    error: dict  # mape_pct, max_ape_pct, n_train, n_test (held out), train_mape_pct (refit on all)
    test_ape: np.ndarray


def fit_role(s: Samples, seed: int = 0) -> RoleFit:
    """Fit on ~80 %, report error on the held-out ~20 %, then refit on all points."""
    train, test = split(len(s), seed)
    err = np.array([])
    if len(test):
        err = ape_pct(fit_forward(s.take(train)), s.take(test))
    coef = fit_forward(s)
    in_sample = ape_pct(coef, s)
    error = {"mape_pct": round(float(err.mean()), 3) if len(err) else None,
             "max_ape_pct": round(float(err.max()), 3) if len(err) else None,
             "n_train": int(len(train)), "n_test": int(len(test)),
             "train_mape_pct": round(float(in_sample.mean()), 3)}
    return RoleFit(coef, error, err)


def fit_measurements(rows: Sequence[dict], seed: int = 0) -> tuple[RoleFit, RoleFit | None, dict]:
    """Target and draft fits plus the combined held-out error for Calibration.fit_error."""
    rows = merge_passes(rows)
    target_samples = samples_from_rows(rows, "target")
    if len(target_samples) < 6:
        raise ValueError(f"only {len(target_samples)} target points were measured (need at least 6)")
    target = fit_role(target_samples, seed)
    draft_samples = samples_from_rows(rows, "draft")
    draft = fit_role(draft_samples, seed) if len(draft_samples) else None
    errs = np.concatenate([target.test_ape] + ([draft.test_ape] if draft else []))
    fit_error = {"mape_pct": round(float(errs.mean()), 3) if len(errs) else None,
                 "max_ape_pct": round(float(errs.max()), 3) if len(errs) else None,
                 "n_train": target.error["n_train"] + (draft.error["n_train"] if draft else 0),
                 "n_test": int(len(errs)), "holdout_fraction": HOLDOUT_FRACTION, "seed": seed,
                 "target": target.error}
    if draft:
        fit_error["draft"] = draft.error
    return target, draft, fit_error

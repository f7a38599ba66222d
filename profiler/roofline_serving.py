"""Fit a calibration's serving terms to measured points, and price any measured point with it (pure numpy).

A calibration is assembled from a parameter vector theta (`build.SERVING_PARAMS`: per-step overhead,
extra overhead of a speculating step, the target's and the drafter's per-forward fixed time, all ms,
and the speculating step's overhead as a fraction of its target time) by a callable
`assemble(theta) -> Calibration`. Every measured point is priced by `costmodel.CostModel`, the
code the simulator runs, so a fit error here is the simulator's error:

* time points (TPOT, step, forward, overhead): residual (predicted - measured) / measured;
* share points (draft/verify/overhead % of a step): residual (predicted - measured) / 100 (1 pp = 1 %).

Each set weighs the same in all (a point weighs 1/sqrt(points of its set) on its residual). Step
times are affine in theta and shares are ratios of affine functions, so a bounded Gauss-Newton
(every term >= 0: `fit.nonnegative_lstsq` on the linearised problem) converges in a few steps.
Parameters no fitted point depends on keep their given (transferred) values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from specdec_sim.acceptance.rates import alpha_from_acceptance_length, position_tokens
from specdec_sim.acceptance.rates import best_uniform_k as best_k_by_goodput
from specdec_sim.costmodel import Calibration, CostModel, uniform_shape
from specdec_sim.costmodel.calibration import as_era
from specdec_sim.profiler.measure_fit import nonnegative_lstsq
from specdec_sim.profiler.published import Measure

SHARE_PART = {"share_draft_pct": "draft_s", "share_verify_pct": "verify_s", "share_overhead_pct": "overhead_s"}
MAX_ITERATIONS = 30


BEST_K_AL_AT = 3  # best_k rows give the mean acceptance length measured at k = 3 (published_measurements.csv)


def best_uniform_k(cost: CostModel, alpha: float, batch: int, context: int, max_k: int) -> int:
    """argmax over k of B * E[tokens] / step time at uniform k (ties to the smaller k), as build-k-table does."""
    return best_k_by_goodput(lambda k: cost.step_time_s(uniform_shape(batch, batch * context, k)), alpha, batch,
                             range(max_k + 1))


def forward_ms(cal: Calibration, m: Measure) -> float:
    """One forward of a profile-gpu row (m.proposer = target or draft) priced by the calibration's coefficients."""
    coef = cal.target if m.proposer == "target" else cal.draft.forward
    batched, kv = m.batch * m.query, m.batch * m.context_tokens
    attn2 = m.batch * m.query * (m.context_tokens + m.query / 2.0) if m.prefill else 0.0
    return coef.forward_ms(batched, kv, m.batch, False, attn2)


def best_k_of(cost: CostModel, m: Measure) -> int:
    """The best uniform k of a best_k point: among `candidates` (default 0..k), by position rates or alpha."""
    ks = m.candidates or tuple(range(m.k + 1))
    step = lambda k: cost.step_time_s(uniform_shape(m.batch, m.batch * m.context_tokens, k))  # noqa: E731
    if m.position_rates:
        return best_k_by_goodput(step, 0.0, m.batch, ks, lambda _alpha, k: position_tokens(m.position_rates, k))
    return best_k_by_goodput(step, alpha_from_acceptance_length(m.acceptance_length, BEST_K_AL_AT), m.batch, ks)


def era_cost(cal: Calibration, era: str) -> CostModel:
    """The cost model of an engine generation: `legacy` (vLLM V1 <= 0.10) ran PIECEWISE CUDA graphs, so it pays the
    dynamic-k tax, and had its own per-request speculation cost; `current` is the calibration as simulated."""
    return CostModel(as_era(cal, era), dynamic_k=era == "legacy")


def cost_for(cal: Calibration, m: Measure) -> CostModel:
    """The cost model of the engine that measured m."""
    return era_cost(cal, m.engine_era)


def predict(cal: Calibration, m: Measure, cost: CostModel | None = None) -> float:
    """What the calibration says for measured point m, in m's unit (`cost`: a cost model of m's engine mode)."""
    if m.metric == "step_overhead_ms":
        return cal.step_overhead_ms
    if m.metric == "forward_ms":
        return forward_ms(cal, m)
    if cost is None or cost.dynamic_k != (m.engine_era == "legacy"):
        cost = cost_for(cal, m)
    if m.metric == "best_k":
        return float(best_k_of(cost, m))
    step = cost.step_time(uniform_shape(m.batch, m.batch * m.context_tokens, m.k))
    total_ms = step.total_s * 1e3
    if m.metric == "tpot_ms":
        return total_ms / m.acceptance_length
    if m.metric == "step_ms":
        return total_ms
    return getattr(step, SHARE_PART[m.metric]) / step.total_s * 100.0


def residual(cal: Calibration, m: Measure, cost: CostModel) -> float:
    pred = predict(cal, m, cost)
    if m.metric in SHARE_PART:
        return (pred - m.value) / 100.0
    return (pred - m.value) / m.value


@dataclass(frozen=True)
class ServingFit:
    theta: np.ndarray
    fitted: tuple[str, ...]  # parameter names some fitted point depends on
    iterations: int


def _residuals(theta: np.ndarray, assemble: Callable[[np.ndarray], Calibration], points: Sequence[Measure],
               weights: np.ndarray) -> np.ndarray:
    cal = assemble(theta)
    costs = {era: era_cost(cal, era) for era in ("current", "legacy")}
    return np.array([residual(cal, m, costs[m.engine_era]) for m in points]) * weights


def set_weights(points: Sequence[Measure]) -> np.ndarray:
    counts: dict[str, int] = {}
    for m in points:
        counts[m.set] = counts.get(m.set, 0) + 1
    return np.array([1.0 / np.sqrt(counts[m.set]) for m in points])


PRIOR_WEIGHT = 0.02  # pull of a transferred value on a term the setting fits itself (see fit_serving)


def fit_serving(assemble: Callable[[np.ndarray], Calibration], names: Sequence[str], start: np.ndarray,
                points: Sequence[Measure], steps: Sequence[float] | None = None,
                only: Sequence[str] | None = None) -> ServingFit:
    """Bounded Gauss-Newton fit of theta (>= 0) to the points; unconstrained parameters, and those not in `only`
    (when given), keep `start`. `steps`: finite-difference step per parameter (default 0.01). With `only`, the
    start values are transferred ones: each fitted term is also pulled weakly toward its start (PRIOR_WEIGHT per
    relative unit), so a direction the points cannot tell apart (a level that shares alone leave free) stays at
    the transferred value instead of drifting."""
    theta = np.maximum(np.asarray(start, dtype=float), 0.0)
    start0 = theta.copy()
    steps = np.full(len(theta), 0.01) if steps is None else np.asarray(steps, dtype=float)
    if not points:
        return ServingFit(theta, (), 0)
    weights = set_weights(points)
    jac = np.empty((len(points), len(theta)))
    for it in range(1, MAX_ITERATIONS + 1):
        r0 = _residuals(theta, assemble, points, weights)
        for j in range(len(theta)):
            if only is not None and names[j] not in only:
                jac[:, j] = 0.0
                continue
            step = np.zeros_like(theta)
            step[j] = steps[j]  # time points are exactly affine in theta, shares nearly so
            jac[:, j] = (_residuals(theta + step, assemble, points, weights) - r0) / steps[j]
        free = [j for j in range(len(theta)) if np.any(np.abs(jac[:, j]) > 1e-12)]
        if not free:
            return ServingFit(theta, (), it)
        a, b = jac[:, free], jac[:, free] @ theta[free] - r0
        if only is not None:  # prior rows: PRIOR_WEIGHT * (theta_j - start_j) / size_j
            size = np.maximum(np.abs(start0[free]), 10 * steps[free])
            a = np.vstack([a, np.diag(PRIOR_WEIGHT / size)])
            b = np.concatenate([b, PRIOR_WEIGHT * start0[free] / size])
        scale = np.maximum(np.abs(a).max(axis=0), 1e-300)
        z = nonnegative_lstsq(a / scale, b) / scale
        new = theta.copy()
        new[free] = z
        if np.max(np.abs(new - theta)) < 1e-7:
            theta = new
            break
        theta = new
    return ServingFit(theta, tuple(names[j] for j in free), it)


def set_error(cal: Calibration, points: Sequence[Measure]) -> dict:
    """Error of the calibration against one measured set: relative % for times, percentage points for
    shares, for best k the % of batch sizes whose best k differs (max_abs_pct: largest |k difference|)."""
    cost = CostModel(cal)
    preds = np.array([predict(cal, m, cost) for m in points])
    meas = np.array([m.value for m in points])
    metric = points[0].metric
    if metric == "best_k":
        diff = np.abs(preds - meas)
        return {"mape_pct": round(float(np.mean(diff > 0) * 100), 2), "max_abs_pct": float(diff.max()),
                "points": len(points), "mean_abs": round(float(diff.mean()), 4), "mean_abs_unit": "k",
                "unit": "k (mape_pct: % of batch sizes with another best k; max_abs_pct: largest |k difference|)"}
    mae = {"mean_abs": round(float(np.mean(np.abs(preds - meas))), 4), "mean_abs_unit": points[0].unit or "ms"}
    if metric in SHARE_PART:
        err = preds - meas
        unit, mae = "pp (percentage points of the step)", {}
    else:
        err = (preds - meas) / meas * 100.0
        unit = "% of measured"
    return {"mape_pct": round(float(np.mean(np.abs(err))), 3), "max_abs_pct": round(float(np.max(np.abs(err))), 3),
            "points": len(points), "unit": unit, **mae}


def point_rows(cal: Calibration, points: Sequence[Measure]) -> list[tuple[Measure, float]]:
    cost = CostModel(cal)
    return [(m, predict(cal, m, cost)) for m in points]

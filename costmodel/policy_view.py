"""What a policy believes a step costs: a linear fit of the true step times, made once, as SmartSpec's authors made theirs.

The engine advances its clock with the true cost model (a calibration). A real controller never
knows that model: TurboSpec/SmartSpec profile the engine over a grid of batch sizes, proposal
lengths and token counts and fit one linear model (smartspec-reference.md 1.4),

    T_target = c_fixed + c_kv*N_kv + c_batched*N_batched + c_seq*B + c_spec*[speculating]
    T_draft  = d_fixed + d_kv*N_kv + d_sched*N_sched + d_k*k + d_seq*m

and price candidate steps with it. `fitted_policy_view(truth)` does exactly that against the
truth: it "profiles" the true model on `ProfileGrid` (decode steps of uniform k at several batch
sizes and contexts, with and without a prefill chunk), fits both lines by least squares (plain,
as the authors' regression; with non-negative coefficients instead when the plain fit would price
some step in the valid range at or below zero), and copies the per-step overheads, which a profiler measures
directly. Over a compute knee a line cannot follow the truth: that error is the point, and its
size is reported (`fit_error["policy_view"]`). Pure: no SimPy, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from specdec_sim.costmodel.calibration import Calibration, CalibrationError, check_step_times
from specdec_sim.costmodel.coefficients import DraftCost, ForwardCoefficients
from specdec_sim.costmodel.lstsq import nonnegative_lstsq
from specdec_sim.costmodel.model import CostModel, StepTime
from specdec_sim.costmodel.model import StepShape, uniform_shape

SAME = "same"
FITTED = "fitted"


@dataclass(frozen=True)
class ProfileGrid:
    """The points a profiler would measure: batch sizes x proposal lengths x contexts x prefill chunks."""

    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    ks: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    contexts: tuple[int, ...] = (256, 1024, 4096)  # context tokens per request
    prefill_chunks: tuple[int, ...] = (0, 512)  # tokens of one prefill chunk sharing the step


def profile_shapes(truth: Calibration, grid: ProfileGrid = ProfileGrid()) -> list[StepShape]:
    """The grid's step shapes that lie inside the truth's valid range."""
    rng = truth.valid_range
    shapes = []
    for b in grid.batch_sizes:
        for k in grid.ks:
            for ctx in grid.contexts:
                for chunk in grid.prefill_chunks:
                    shape = uniform_shape(b, b * ctx, k, chunk, 1 if chunk else 0)
                    fits = (shape.num_seqs <= rng.max_batch_size and shape.kv_tokens <= rng.max_context_tokens
                            and shape.verify_tokens + shape.prefill_tokens <= rng.max_batched_tokens
                            and k <= rng.max_k)
                    if fits:
                        shapes.append(shape)
    return shapes


def _target_features(s: StepShape, turbospec: bool) -> list[float]:
    batched = s.verify_tokens + s.prefill_tokens + (s.num_decode if turbospec else 0)
    return [1.0, s.kv_tokens, batched, s.num_seqs, 1.0 if s.num_proposing else 0.0]


def _draft_features(s: StepShape) -> list[float]:
    return [1.0, s.kv_tokens, s.num_decode + s.prefill_tokens, s.max_k, s.num_proposing]


def _fit(rows: list[list[float]], ms: list[float], nonnegative: bool) -> np.ndarray:
    """Least squares in milliseconds (plain, as the authors' regression; or with every coefficient >= 0)."""
    a, y = np.asarray(rows, dtype=float), np.asarray(ms, dtype=float)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-300)  # column scaling for conditioning only
    if nonnegative:
        return nonnegative_lstsq(a / scale, y) / scale
    return np.linalg.lstsq(a / scale, y, rcond=None)[0] / scale


def _percent_errors(predicted: np.ndarray, measured: np.ndarray) -> dict:
    rel = np.abs(predicted - measured) / measured * 100.0
    return {"mape_pct": round(float(rel.mean()), 3), "max_abs_pct": round(float(rel.max()), 3),
            "points": int(len(rel))}


def _linear_view(truth: Calibration, shapes: list[StepShape], times: list[StepTime], nonnegative: bool) -> Calibration:
    turbospec = truth.batched_tokens_convention == "turbospec_v1"
    t = _fit([_target_features(s, turbospec) for s in shapes], [st.verify_s * 1e3 for st in times], nonnegative)
    target = ForwardCoefficients(fixed_ms=float(t[0]), per_kv_token_ms=float(t[1]), per_batched_token_ms=float(t[2]),
                                 per_seq_ms=float(t[3]), spec_on_ms=float(t[4]))
    draft = truth.draft
    if draft.kind != "fraction":
        spec = [(s, st) for s, st in zip(shapes, times) if s.max_k > 0]
        d = _fit([_draft_features(s) for s, _ in spec], [st.draft_s * 1e3 for _, st in spec], nonnegative)
        draft = DraftCost(kind="linear", fixed_ms=float(d[0]), per_kv_token_ms=float(d[1]),
                          per_scheduled_token_ms=float(d[2]), per_k_ms=float(d[3]), per_seq_ms=float(d[4]))
    how = "non-negative least squares" if nonnegative else "least squares"
    # the line is fitted to step times that already carry batch expansion and eager forwards: priced as a plain
    # line (mqa, no graph limit), or they would be charged twice
    return replace(truth, name=f"{truth.name}+fitted-linear", target=target, draft=draft, fit_error={},
                   scorer="mqa", cuda_graph_max_batch=0, eager_forward_ms=0.0, eager_draft_forward_ms=0.0,
                   provenance={"source": f"linear fit ({how}) of calibration {truth.name!r} over {len(shapes)} "
                                         "profiled steps (costmodel/policy_view.py), as the TurboSpec authors fit "
                                         "theirs"})


def fitted_policy_view(truth: Calibration, grid: ProfileGrid = ProfileGrid()) -> Calibration:
    """A linear calibration fitted to `truth` on `grid` (see the module docstring): plain least squares in
    the truth's own batched-token convention (so a truth that is already such a line is recovered), or with
    non-negative coefficients when the plain fit would price a step at or below zero somewhere in the valid
    range. Its error over the grid's total step times is `fit_error["policy_view"]`."""
    true_cost = CostModel(truth)
    shapes = profile_shapes(truth, grid)
    times = [true_cost.step_time(s) for s in shapes]
    try:
        view = check_step_times(_linear_view(truth, shapes, times, nonnegative=False))
    except CalibrationError:
        view = check_step_times(_linear_view(truth, shapes, times, nonnegative=True))
    view_cost = CostModel(view)
    predicted = np.array([view_cost.step_time_s(s) for s in shapes])
    measured = np.array([st.total_s for st in times])
    return replace(view, fit_error={"policy_view": _percent_errors(predicted, measured)})


def policy_calibration(truth: Calibration, choice: str, load) -> Calibration:
    """The calibration a policy prices with: `same` (the truth), `fitted` (its linear view) or one loaded by
    `load(name_or_path)`."""
    if choice == SAME:
        return truth
    if choice == FITTED:
        return fitted_policy_view(truth)
    return load(choice)

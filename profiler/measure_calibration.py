"""Turn a measurements CSV into a simulator calibration (specdec_sim.costmodel.Calibration JSON).

No torch here: the device facts come from the CSV rows and the caller, the model facts from the
model registry (costmodel/architectures.py), so a calibration can be refitted from a CSV on any machine. The calibration is
checked as `load_calibration` checks it (step times over its valid range), and a held-out error
above HOLDOUT_WARN_PCT is recorded as `fit_error["warning"]` (profile-gpu prints it).
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

from specdec_sim.profiler.measure_fit import fit_measurements, merge_passes
from specdec_sim.costmodel.architectures import DTYPE_BYTES, Architecture
from specdec_sim.costmodel import Calibration, DraftCost, MemorySpec
from specdec_sim.costmodel.calibration import check_step_times

GIB = 2**30
HOLDOUT_WARN_PCT = 10.0  # mean held-out error above which profile-gpu warns


def holdout_warning(fit_error: dict) -> str | None:
    """The warning a poor or unknown held-out error deserves, or None."""
    mean, worst, n = fit_error.get("mape_pct"), fit_error.get("max_ape_pct"), fit_error.get("n_test")
    if not n or mean is None:
        return "too few points to hold any out: the calibration's error is unknown (measure a bigger grid)"
    if mean <= HOLDOUT_WARN_PCT:
        return None
    return (f"held-out error {mean:.1f} % mean, {worst:.1f} % max on {n} points exceeds {HOLDOUT_WARN_PCT:g} %: "
            "this calibration may misprice steps; measure a bigger grid (--grid standard) or more passes "
            "(--passes 3) on a quiet machine")


def memory_spec(target: Architecture, draft: Architecture | None, dtype: str, device_memory_gib: float) -> MemorySpec:
    """KV-cache sizing facts from the shapes: weights of both models, KV bytes/token of both."""
    size = DTYPE_BYTES[dtype]
    weights = target.weight_bytes(size) + (draft.weight_bytes(size) if draft else 0)
    kv = target.kv_bytes_per_token(size) + (draft.kv_bytes_per_token(size) if draft else 0)
    return MemorySpec(gpu_memory_gib=round(device_memory_gib, 2), gpu_memory_utilization=0.9,
                      weights_gib=round(weights / GIB, 4), activation_reserve_gib=1.0,
                      kv_bytes_per_token=int(kv), block_size=16)


def build_calibration(rows: Sequence[dict], name: str, target: Architecture, draft: Architecture | None,
                      dtype: str, device_memory_gib: float, provenance: dict, seed: int = 0) -> Calibration:
    """Fit target and draft forwards and package them with memory facts and provenance."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}")
    tfit, dfit, fit_error = fit_measurements(rows, seed)
    warning = holdout_warning(fit_error)
    if warning:
        fit_error["warning"] = warning
    passes = max((int(r.get("pass_no") or 0) for r in rows), default=0) + 1
    rows = merge_passes(rows)
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    device = ok[0]["device"] if ok else ""
    skipped = sum(1 for r in rows if r.get("status") == "skipped")
    draft_cost = DraftCost(kind="sequential", forward=dfit.coefficients) if dfit else \
        DraftCost(kind="fraction", fraction_of_target=0.0)
    desc = (f"{target.name} target" + (f" with {draft.name} draft" if draft else "") +
            f" on {device}, {dtype}; fitted by profile-gpu from {len(ok)} measured points"
            + (f" ({skipped} skipped)" if skipped else "") + (f", median of {passes} passes" if passes > 1 else "")
            + ".")
    notes = {"overhead": "overhead_fixed_ms and overhead_fraction are 0: rejection sampling and bookkeeping "
                         "were not measured by profile-gpu (forward passes only).",
             "draft": "draft.forward is one sequential draft-model forward (query 1); the cost model "
                      "sums it over the k draft steps.",
             "memory": "weights_gib and kv_bytes_per_token derived from the architecture configs at this "
                       "dtype (target + draft); gpu_memory_gib is the device memory seen by the profiler.",
             "valid_range": "where the step time is checked finite and > 0 (every fitted term is >= 0, so it "
                            "holds anywhere); the measured shapes are in grid, beyond them the fit extrapolates.",
             "fitted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    cal = Calibration(name=name, target=tfit.coefficients, draft=draft_cost, overhead_fraction=0.0,
                      overhead_fixed_ms=0.0, batched_tokens_convention="exact",
                      memory=memory_spec(target, draft, dtype, device_memory_gib), description=desc,
                      device=device, fit_error=fit_error, provenance={**provenance, **notes})
    return check_step_times(cal)


def fit_summary(cal: Calibration) -> str:
    """Human-readable fit result: coefficients and held-out error per role."""
    lines = []
    for role, coef in (("target", cal.target), ("draft", cal.draft.forward)):
        if coef is None:
            continue
        err = cal.fit_error.get(role, {})
        knee = f", knee at {coef.knee_tokens:g} tok, slope {coef.after_knee_ms:+.3g} ms/tok after it" if coef.after_knee_ms else ""
        held = (f"held-out MAPE {err.get('mape_pct')} % (max {err.get('max_ape_pct')} %, n_test {err.get('n_test')})"
                if err.get("n_test") else "too few points to hold any out")
        lines.append(f"{role}: {coef.fixed_ms:.4g} ms + {coef.per_kv_token_ms:.3g} ms/kv-tok + "
                     f"{coef.per_batched_token_ms:.3g} ms/tok + {coef.per_seq_ms:.3g} ms/seq{knee}; {held}")
    e = cal.fit_error
    lines.append(f"overall held-out error: mean {e.get('mape_pct')} %, max {e.get('max_ape_pct')} % "
                 f"on {e.get('n_test')} points (trained on {e.get('n_train')})")
    return "\n".join(lines)

"""`build-calibration --from-bench`: a calibration whose serving terms are fitted to `vllm bench serve` runs.

1. The result files are read and checked first (`bench_results`: one line naming the file and key).
2. The calibration of the setting is built as without `--from-bench` (`roofline_build.build_calibration`:
   roofline, Vidur efficiencies, serving terms fitted to the published points and `--profile`, the rest
   transferred); its serving terms are the starting point and the values kept for terms the runs do not
   constrain.
3. The serving terms (`roofline_build.SERVING_PARAMS`, read at run time) are refitted by simulating each
   run (`bench_fit`); leave-one-out refits predict each file from the others.
4. The calibration is assembled from the fitted terms (`Setting.assemble`) and checked like every built one;
   `fit_error` gets one entry per file (`bench:<file name>`, "% of measured": fitted and leave-one-out
   errors of its metrics) beside the published sets, re-priced with the new terms (role `start fit` for
   those the starting terms were fitted to); `provenance.bench_results` names every file with its
   SHA-256, and `provenance.serving_terms` says which terms the runs moved.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from specdec_sim.costmodel import Calibration, CalibrationError, check_step_times
from specdec_sim.profiler import roofline_build
from specdec_sim.profiler.bench_fit import FD_STEP, MISSING, PULL, SEED, BenchFit, fit_bench
from specdec_sim.profiler.bench_results import FITTED_METRICS, METRIC_LABELS, STEP_BUDGET, BenchRun, read_bench_files
from specdec_sim.profiler.published import PublishedError, read_published
from specdec_sim.profiler.roofline_build import BuildError, BuildResult, build_calibration, make_setting
from specdec_sim.profiler.roofline_efficiency import EfficiencyError, load_efficiency_table
from specdec_sim.profiler.roofline_serving import set_error

FLOOR_STEPS = 10.0  # a term's scale is at least 10 finite-difference steps of the builder's (roofline_build.STEPS)


@dataclass(frozen=True)
class BenchBuild:
    result: BuildResult  # the refitted calibration, its theta and notes (the published sets kept for the table)
    start: BuildResult  # the calibration built without the runs: the starting point
    fit: BenchFit
    runs: list[BenchRun]
    keys: list[str]  # fit_error key of each file


def proposer_style(setting) -> str:
    """simulate's --style for the setting's proposer."""
    if setting.proposer.kind == "ngram":
        return "ngram"
    return "tree" if setting.proposer.tree else "draft"


def term_floor(names: Sequence[str]) -> np.ndarray:
    """The smallest scale of each term: FLOOR_STEPS of the builder's finite-difference step (0.01 without one)."""
    steps = getattr(roofline_build, "STEPS", None)
    if steps is None or len(steps) != len(names):
        steps = [0.01] * len(names)
    return np.asarray(steps, dtype=float) * FLOOR_STEPS


def _file_keys(runs: Sequence[BenchRun]) -> list[str]:
    keys, seen = [], {}
    for run in runs:
        key = f"bench:{run.name}"
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return keys


def _stats(errors: np.ndarray | None) -> tuple[float | None, float | None]:
    """Mean and max |error| over the metrics a simulation produced (None when it produced none)."""
    if errors is None or not np.isfinite(errors).any():
        return None, None
    finite = np.abs(errors[np.isfinite(errors)])
    return round(float(finite.mean()), 3), round(float(finite.max()), 3)


def _num(value: float, digits: int = 4) -> float | None:
    """A number for JSON: None for a metric the simulation could not produce (nothing finished)."""
    return round(float(value), digits) if np.isfinite(value) else None


def _file_error(fit: BenchFit, i: int) -> dict:
    err, loo, start = fit.errors_pct("fit"), fit.errors_pct("loo"), fit.errors_pct("start")
    case, run = fit.cases[i], fit.cases[i].run
    mape, peak = _stats(err[i])
    loo_mape, loo_peak = _stats(None if loo is None else loo[i])
    per_metric = {}
    for j, key in enumerate(FITTED_METRICS):
        per_metric[key] = {"measured": run.measured[key], "fitted": _num(fit.predicted[i, j]),
                           "error_pct": _num(err[i, j], 3),
                           "loo": None if loo is None else _num(fit.loo_predicted[i, j]),
                           "loo_error_pct": None if loo is None else _num(loo[i, j], 3),
                           "start": _num(fit.start_predicted[i, j]), "start_error_pct": _num(start[i, j], 3)}
    return {"role": "bench fit", "points": len(FITTED_METRICS), "unit": "% of measured", "mape_pct": mape,
            "max_abs_pct": peak, "loo_mape_pct": loo_mape, "loo_max_abs_pct": loo_peak, "metrics": per_metric,
            "path": run.path, "sha256": run.sha256, "simulated_requests": case.simulated,
            "note": "mape/max over mean TPOT, mean ITL, mean TTFT and output throughput of the simulated run; loo_*: "
                    "predicted by the serving terms refitted without this file"}


def _run_record(fit: BenchFit, i: int) -> dict:
    case, run = fit.cases[i], fit.cases[i].run
    return {"path": run.path, "sha256": run.sha256, "model_id": run.model_id, "sent": run.label(),
            "num_prompts": run.num_prompts, "completed": run.completed, "simulated_requests": case.simulated,
            "per_request_lengths": run.output_lens is not None,
            "request_rate": "inf" if run.request_rate == float("inf") else run.request_rate,
            "burstiness": run.burstiness, "max_concurrency": run.max_concurrency, "policy": case.policy,
            "k": run.k or None, "k_from": run.k_source or None, "acceptance_length": run.acceptance_length,
            "alpha": None if case.alpha is None else round(case.alpha, 5), "notes": list(run.notes)}


def _notes(start: BuildResult, fit: BenchFit, theta: dict, count: int) -> dict[str, str]:
    notes = {}
    for name, how in start.notes.items():
        if name in fit.fitted:
            notes[name] = (f"fitted to {count} vllm bench serve result{'s' if count > 1 else ''} (--from-bench), "
                           f"from {start.theta[name]:.5g} ({how})")
        else:
            notes[name] = f"{how}; the bench results do not constrain it"
    return notes


def _provenance(start: BuildResult, fit: BenchFit, theta: dict, notes: dict, command: str,
                max_requests: int) -> dict:
    prov = dict(start.calibration.provenance or {})
    count = len(fit.cases)
    units = getattr(roofline_build, "UNITS", {})
    old_terms = prov.get("serving_terms") or {}
    prov["serving_terms"] = {n: {**(old_terms.get(n) or {}), "value": theta[n], "unit": units.get(n, "ms"),
                                 "how": notes[n]} for n in theta if n in notes}
    prov["summary"] = (str(prov.get("summary", "")).rstrip(". ") + f"; serving terms refitted to {count} vllm bench "
                       f"serve result{'s' if count > 1 else ''} ({', '.join(fit.fitted) or 'none constrained'})")
    sources = dict(prov.get("sources") or {})
    for i, case in enumerate(fit.cases):
        sources[f"bench:{case.run.name}"] = f"vllm bench serve result {case.run.path} (sha256 {case.run.sha256})"
    prov["sources"] = sources
    prov["bench_results"] = [_run_record(fit, i) for i in range(count)]
    prov["bench_fit"] = {
        "method": ("each run simulated with the candidate calibration (simulate's V1 engine): its requests "
                   "(per-request lengths when the file has them, else the mean lengths), sent as vllm bench serve "
                   "sent them (closed loop at max_concurrency, or Gamma arrivals at request_rate), policy none or "
                   "fixed:k, acceptance matched to the file's acceptance length; bounded (>= 0) Levenberg-Marquardt "
                   "on the relative errors of the metrics, every file weighed alike"),
        "metrics": list(FITTED_METRICS), "fitted_terms": list(fit.fitted),
        "kept_terms": [n for n in fit.names if n not in fit.fitted],
        "max_simulated_requests": max_requests, "step_budget": STEP_BUDGET, "seed": SEED,
        "finite_difference_step": f"{FD_STEP:.0%} of a term's scale (its starting value, at least "
                                  f"{FLOOR_STEPS:g} builder steps)",
        "pull_to_start": f"{PULL:g} residual per 100 % of a term moved", "iterations": fit.iterations,
        "simulations": fit.simulations, "leave_one_out": fit.loo_predicted is not None}
    prov["command"] = command
    prov["built_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return prov


def _fit_error(start: BuildResult, cal: Calibration, fit: BenchFit, keys: list[str]) -> dict:
    errors = dict(start.calibration.fit_error or {})
    for name, pts in start.sets.items():
        role = str((errors.get(name) or {}).get("role", ""))
        errors[name] = {**set_error(cal, pts), "role": "start fit" if role == "fit" else role}
    for i, key in enumerate(keys):
        errors[key] = _file_error(fit, i)
    return errors


def build_from_bench(name: str, target: str, proposer: str, gpu: str, tp: int, bench: Sequence[str | Path],
                     k_option: int | None = None, vidur_dir: str | Path | None = None,
                     published: str | Path | None = None, profile: str | Path | None = None, command: str = "",
                     max_requests: int | None = None, leave_one_out: bool = True,
                     progress: Callable[[str], None] | None = None) -> BenchBuild:
    """The calibration of (target, proposer, gpu, tp) with its serving terms fitted to the bench runs.
    BenchError or BuildError (one line) for anything unusable."""
    runs = read_bench_files([str(p) for p in bench], k_option)
    try:
        table = load_efficiency_table(vidur_dir)
        measures = read_published(published) if published is not None else []
    except (EfficiencyError, PublishedError) as exc:
        raise BuildError(str(exc)) from None
    start = build_calibration(name, target, proposer, gpu, tp, vidur_dir, published, profile, command, table=table)
    setting = make_setting(name, target, proposer, gpu, tp, table, measures)
    names = tuple(roofline_build.SERVING_PARAMS)
    base = start.calibration

    def assemble(theta: np.ndarray) -> Calibration:
        return replace(setting.assemble(np.asarray(theta, dtype=float)), name=base.name, device=base.device,
                       batched_tokens_convention=base.batched_tokens_convention)

    theta0 = np.array([start.theta[n] for n in names], dtype=float)
    fit = fit_bench(assemble, names, theta0, term_floor(names), runs, proposer_style(setting), max_requests,
                    leave_one_out, progress)
    theta = {n: round(float(v), 5) for n, v in zip(names, fit.theta)}
    keys = _file_keys(runs)
    cal = assemble(np.array(list(theta.values())))
    notes = _notes(start, fit, theta, len(runs))
    described = (f"{base.description.rstrip('. ')}; serving terms refitted to {len(runs)} vllm bench serve "
                 f"result{'s' if len(runs) > 1 else ''}.")
    cal = replace(cal, description=described, fit_error=_fit_error(start, cal, fit, keys),
                  provenance=_provenance(start, fit, theta, notes, command, max_requests))
    try:
        cal = check_step_times(cal)
    except CalibrationError as exc:
        raise BuildError(str(exc)) from None
    result = replace(start, calibration=cal, theta=theta, notes=notes)
    return BenchBuild(result, start, fit, runs, keys)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


def _summary(errors: np.ndarray) -> str:
    mean, peak = _stats(errors)
    return "no metric simulated" if mean is None else f"mean |err| {mean:.2f} % (max {peak:.2f} %)"


def bench_report(build: BenchBuild) -> str:
    """Per file and metric: measured, fitted, error and leave-one-out error; then the totals."""
    fit = build.fit
    err, loo, start = fit.errors_pct("fit"), fit.errors_pct("loo"), fit.errors_pct("start")
    width = max(12, *(len(c.run.name) for c in fit.cases))
    lines = [f"{'bench file':{width}} {'sent':12} {'k':>2} {'AL':>5} {'simulated':>10}  {'metric':13} "
             f"{'measured':>9} {'fitted':>9} {'err %':>7} {'LOO err %':>9}"]
    for i, case in enumerate(fit.cases):
        run = case.run
        head = (f"{run.name:{width}} {run.label():12} {run.k or '-':>2} "
                f"{(f'{run.acceptance_length:.2f}' if run.acceptance_length else '-'):>5} "
                f"{f'{case.simulated}/{run.completed}':>10}")
        for j, key in enumerate(FITTED_METRICS):
            lo = "-" if loo is None else f"{loo[i, j]:+.2f}"
            lines.append(f"{head if j == 0 else '':{len(head)}}  {METRIC_LABELS[key]:13} {_fmt(run.measured[key]):>9} "
                         f"{_fmt(fit.predicted[i, j]):>9} {err[i, j]:+7.2f} {lo:>9}")
    text = f"fit: {_summary(err)} over {len(fit.cases)} files x {err.shape[1]} metrics"
    if loo is not None:
        text += f"; leave-one-out: {_summary(loo)}"
    lines.append(text)
    lines.append(f"before the fit (the terms built without --from-bench): {_summary(start)}")
    missing = int((~np.isfinite(fit.predicted)).sum())
    if missing:
        lines.append(f"{missing} metric(s) could not be simulated (no request finished): counted as "
                     f"{MISSING * 100:.0f} % errors in the fit")
    kept = [n for n in fit.names if n not in fit.fitted]
    lines.append(f"fitted {', '.join(fit.fitted) or 'nothing'}" + (f"; kept {', '.join(kept)} (the runs do not "
                 "depend on them)" if kept else "") + f"; {fit.iterations} iterations, {fit.simulations} simulations")
    return "\n".join(lines)


__all__ = ["BenchBuild", "bench_report", "build_from_bench", "proposer_style", "term_floor"]

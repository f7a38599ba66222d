"""Fit a calibration's serving terms to `vllm bench serve` runs by simulating each run (`--from-bench`).

A bench result is predicted by simulating the run it describes with the candidate calibration (the
engine of `simulate`: `simulator.prepared.prepare_engine` with the in-memory calibration, then
`simulator.engine.run_simulation`):

* requests: every request the file completed, unless that is more than about STEP_BUDGET (60,000) engine
  steps, about a second of Python (a closed loop of c emits about c x acceptance length tokens a step, so
  this only cuts long runs at low concurrency); then a sample spread evenly over the prompt lengths, in
  the order sent, never so small that the run's ramp-up and drain weigh differently (c in flight: c / n
  within 0.5 percentage points of c / completed); `max_requests` (--bench-requests) caps it. Measured
  TTFT of a closed loop depends on which prompts are prefilled together: in these simulations, dropping
  50 of 300 requests of a closed loop of 32 moved its mean TTFT by 12-28 %, hence whole runs. Lengths are
  the per-request `input_lens`/`output_lens` when the file has them, else the mean input and output length;
* sending: all at once in a closed loop of `max_concurrency` (request_rate inf), or Gamma arrivals at
  `request_rate` with the file's burstiness (1 = Poisson; seeded), capped by max_concurrency when given;
* speculation: `none` for a file without spec_decode counters, `fixed:K` with; acceptance is a per-token
  rate alpha (per-request spread as `simulate`'s default) chosen so that the simulated run's acceptance
  length equals the file's (alpha_from_acceptance_length, then corrected on the simulated counters at
  the starting calibration, to within 0.2 %); the drafting style follows the proposer (n-gram: prompt
  lookup with simulate's default match rate);
* engine: V1 with the GPU's default limits, no max_model_len check (the file's requests were served),
  one seed (0) for every simulation, so two calibrations are compared on the same draws.

Residuals are the relative errors of mean TPOT, mean ITL, mean TTFT and output throughput, four per file,
every file weighed alike. The fitted parameters are the builder's serving terms, read at run time from
`roofline_build.SERVING_PARAMS` and assembled by `Setting.assemble(theta)` (this module is handed the
assembling function and the names); terms whose finite-difference Jacobian column is ~0 at the start
(nothing in these files depends on them: e.g. the drafter's terms without a file with speculation) keep
their starting (published-fit or transferred) values. Each term is scaled by its starting value (at
least `floor`); the fit is a bounded (>= 0) Levenberg-Marquardt on the scaled terms, with forward
differences of 3 % of a term (the simulated metrics are piecewise continuous in theta: a tiny step would
measure event reordering, not slope), Broyden secant updates between measured Jacobians, and a weak pull
(PULL: a residual of 0.01 per 100 % of a term) toward the starting values, so that directions the files
cannot tell apart (a per-step and a per-forward constant both add to every step) keep the starting split
rather than drifting. Leave-one-out: the same fit, from the same start, without one file, predicts that
file (simulations are remembered by theta, so the refits reuse the full fit's first Jacobian).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from specdec_sim.acceptance.rates import alpha_from_acceptance_length
from specdec_sim.costmodel import Calibration, CalibrationError
from specdec_sim.costmodel.lstsq import nonnegative_lstsq
from specdec_sim.profiler.bench_results import FITTED_METRICS, STEP_BUDGET, BenchError, BenchRun
from specdec_sim.simulator.config import ConfigError, SimConfig
from specdec_sim.simulator.engine import run_simulation
from specdec_sim.simulator.prepared import prepare_engine
from specdec_sim.traces import Trace, TraceError, synthetic_trace

WARMUP_SLACK = 0.005  # a sample keeps the ramp-up/drain share c/n within this of the run's c/N
SEED = 0
FD_STEP = 0.03  # finite-difference step, as a fraction of a term's scale
PULL = 1e-2  # residual per 100 % of a term moved from its starting value
MAX_ITERATIONS = 15
MOVED_TOLERANCE = 2e-3  # stop when no term moves more than 0.2 % of its scale ...
GAIN_TOLERANCE = 1e-2  # ... or the cost falls by less than 1 % (of a sum of squared relative errors)
MAX_DAMPING = 4  # tries per iteration, the damping x10 each
AL_TOLERANCE = 0.002  # relative: simulated vs the file's acceptance length
MISSING = 10.0  # residual of a metric the simulation could not produce (nothing finished)
Assemble = Callable[[np.ndarray], Calibration]


@dataclass(frozen=True)
class BenchCase:
    """One bench run as the simulator replays it."""

    run: BenchRun
    trace: Trace
    config: SimConfig
    policy: str
    alpha: float | None = None  # per-token acceptance (runs with speculation)

    @property
    def simulated(self) -> int:
        return len(self.trace)


def in_flight(run: BenchRun) -> float:
    """Requests in flight on average (Little's law): the concurrency limit of a closed loop sending all at once,
    else request rate x mean latency (TTFT + TPOT x (mean output - 1)), capped by max_concurrency."""
    if run.max_concurrency and not math.isfinite(run.request_rate):
        return float(run.max_concurrency)
    mean_output = run.total_output_tokens / run.completed
    latency_s = (run.measured["mean_ttft_ms"] + run.measured["mean_tpot_ms"] * max(mean_output - 1, 0)) / 1e3
    busy = run.request_rate * latency_s if math.isfinite(run.request_rate) else float(run.completed)
    return min(busy, float(run.max_concurrency or busy))


def simulated_count(run: BenchRun, max_requests: int | None = None) -> int:
    """Requests simulated for `run`: all it completed, unless that takes more than about STEP_BUDGET engine steps
    (c in flight emit about c x acceptance length tokens a step); then enough that the run's ramp-up and drain
    weigh as they did (c / n within WARMUP_SLACK of c / N). `max_requests` (the user's cap) wins."""
    available = len(run.output_lens) if run.output_lens is not None else run.completed
    c = max(in_flight(run), 1.0)
    mean_output = max(run.total_output_tokens / run.completed, 1.0)
    n = max(8, math.ceil(STEP_BUDGET * c * (run.acceptance_length or 1.0) / mean_output))
    n = max(n, math.ceil(c / (c / run.completed + WARMUP_SLACK)))
    if max_requests:
        n = min(n, max_requests)
    return min(available, n)


def _lengths(run: BenchRun, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n requests' (prompt, output) lengths: the file's (all, or n of them spread evenly over the prompt lengths
    and kept in the order sent, so the sample's prompt lengths are distributed as the run's), else n of the means."""
    if run.output_lens is None:
        prompt = max(1, round(run.total_input_tokens / run.completed))
        output = max(1, round(run.total_output_tokens / run.completed))
        return np.full(n, prompt, dtype=np.int64), np.full(n, output, dtype=np.int64)
    ins, outs = np.asarray(run.input_lens, dtype=np.int64), np.asarray(run.output_lens, dtype=np.int64)
    if n < len(outs):
        ranks = np.round((np.arange(n) + 0.5) * len(outs) / n - 0.5).astype(int)
        keep = np.sort(np.argsort(ins, kind="stable")[ranks])
        ins, outs = ins[keep], outs[keep]
    return ins, outs


def bench_case(run: BenchRun, style: str, max_requests: int | None = None, seed: int = SEED) -> BenchCase:
    """The simulation of `run` (see the module docstring); BenchError names the file if it cannot be built."""
    n = simulated_count(run, max_requests)
    prompts, outputs = _lengths(run, n)
    try:
        if math.isfinite(run.request_rate):
            arrival = synthetic_trace(run.request_rate, num_requests=n, burstiness=run.burstiness, seed=seed).arrival_s
        else:
            arrival = np.zeros(n)
        trace = Trace(request_id=np.arange(n), arrival_s=arrival, prompt_tokens=prompts, output_tokens=outputs,
                      source=f"vllm bench serve result {run.path}")
    except (TraceError, ValueError) as exc:
        raise BenchError(f"{run.path}: cannot replay its requests ({exc})") from None
    config = SimConfig(max_concurrency=run.max_concurrency, style=style, max_k=max(7, run.k), max_model_len=0,
                       policy_calibration="same", record_steps=False)
    alpha = None
    if run.speculative:
        alpha = min(alpha_from_acceptance_length(run.acceptance_length, run.k), 0.999)
        config = replace(config, acceptance=alpha)
    return BenchCase(run, trace, config, f"fixed:{run.k}" if run.speculative else "none", alpha)


def simulate(case: BenchCase, cal: Calibration) -> dict:
    """The summary (vLLM's keys) of the case simulated with `cal`."""
    try:
        engine = prepare_engine(case.config, calibration=cal)
        return run_simulation(case.trace, case.config, case.policy, SEED, engine=engine).summary
    except (ConfigError, CalibrationError, TraceError, ValueError) as exc:
        raise BenchError(f"{case.run.path}: cannot simulate this run with calibration {cal.name} "
                         f"({' '.join(str(exc).split())})") from None


def failure_reason(case: BenchCase, cal: Calibration) -> str:
    """The commonest reason the simulated requests of `case` failed."""
    engine = prepare_engine(case.config, calibration=cal)
    requests = run_simulation(case.trace, case.config, case.policy, SEED, engine=engine).requests
    reasons = requests.loc[requests["status"] != "finished", "reason"]
    return str(reasons.mode().iloc[0]) if len(reasons) else "no reason recorded"


def metrics(summary: dict) -> np.ndarray:
    return np.array([float(summary.get(key) if summary.get(key) is not None else math.nan)
                     for key in FITTED_METRICS])


def match_acceptance(case: BenchCase, cal: Calibration) -> BenchCase:
    """The case with alpha set so that the simulated acceptance length equals the file's (a few simulations)."""
    run = case.run
    if not run.speculative:
        return case
    goal = aim = run.acceptance_length
    best = case
    for _ in range(5):
        summary = simulate(best, cal)
        got = summary.get("spec_decode_acceptance_length") or summary.get("mean_acceptance_length") or 1.0
        if abs(got - goal) <= AL_TOLERANCE * goal:
            break
        aim = min(max(aim + goal - got, 1.0), run.k + 1.0)
        alpha = min(alpha_from_acceptance_length(aim, run.k), 0.999)
        best = replace(best, config=replace(best.config, acceptance=alpha), alpha=alpha)
    return best


def predict_all(cases: Sequence[BenchCase], cal: Calibration) -> np.ndarray:
    """(files, metrics) predicted by simulating every case with `cal`."""
    return np.array([metrics(simulate(c, cal)) for c in cases]).reshape(len(cases), len(FITTED_METRICS))


def measured_matrix(cases: Sequence[BenchCase]) -> np.ndarray:
    return np.array([[c.run.measured[key] for key in FITTED_METRICS] for c in cases])


def relative_errors(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """(predicted - measured) / measured; a metric the simulation could not produce counts MISSING."""
    err = (predicted - measured) / measured
    return np.where(np.isfinite(err), err, MISSING)


class Predictor:
    """Simulated metrics of each case under a theta, remembered: the leave-one-out fits start where the full fit
    started, so their first Jacobian is the full fit's, read back rather than simulated again."""

    def __init__(self, assemble: Assemble, cases: Sequence[BenchCase]):
        self.assemble, self.cases = assemble, list(cases)
        self._memo: dict[tuple[int, bytes], np.ndarray] = {}
        self.simulations = 0

    def rows(self, theta: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        key, cal, out = np.asarray(theta, dtype=float).tobytes(), None, []
        for i in indices:
            row = self._memo.get((i, key))
            if row is None:
                cal = cal or self.assemble(np.asarray(theta, dtype=float))
                row = self._memo[(i, key)] = metrics(simulate(self.cases[i], cal))
                self.simulations += 1
            out.append(row)
        return np.array(out).reshape(len(out), len(FITTED_METRICS))


@dataclass(frozen=True)
class ThetaFit:
    theta: np.ndarray
    fitted: tuple[int, ...]  # indices of the terms the files constrain (the others kept their start)
    iterations: int
    predicted: np.ndarray  # (files, metrics) under theta


def fit_theta(predictor: Predictor, indices: Sequence[int], start: np.ndarray, scale: np.ndarray,
              max_iterations: int = MAX_ITERATIONS) -> ThetaFit:
    """Bounded Levenberg-Marquardt fit of theta (>= 0) to the cases `indices`, in units of `scale` (module
    docstring)."""
    start = np.maximum(np.asarray(start, dtype=float), 0.0)
    measured = measured_matrix([predictor.cases[i] for i in indices])
    prior = start / scale

    def residuals(x_free: np.ndarray, free: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        theta = start.copy()
        theta[list(free)] = x_free * scale[list(free)]
        pred = predictor.rows(theta, indices)
        return relative_errors(pred, measured).ravel(), pred

    def jacobian(x_free: np.ndarray, free: Sequence[int], r0: np.ndarray) -> np.ndarray:
        jac = np.empty((r0.size, len(free)))
        for j in range(len(free)):
            x = x_free.copy()
            x[j] += FD_STEP
            jac[:, j] = (residuals(x, free)[0] - r0) / FD_STEP
        return jac

    every = list(range(len(start)))
    r, pred = residuals(prior, every)
    jac = jacobian(prior, every, r)
    free = [j for j in every if np.max(np.abs(jac[:, j])) > 1e-6]
    if not free:
        return ThetaFit(start, (), 0, pred)
    jac, x, x0 = jac[:, free], prior[free], prior[free]
    pull = (lambda v: PULL**2 * float((v - x0) @ (v - x0)))
    total = float(r @ r)
    mu, eye = 1e-4, np.eye(len(free))
    fresh = True  # the Jacobian was measured at x (not a secant update)
    for it in range(1, max_iterations + 1):
        for _ in range(MAX_DAMPING):
            a = np.vstack([jac, PULL * eye, math.sqrt(mu) * eye])
            b = np.concatenate([jac @ x - r, PULL * x0, math.sqrt(mu) * x])
            z = nonnegative_lstsq(a, b)
            r_new, pred_new = residuals(z, free)
            total_new = float(r_new @ r_new) + pull(z)
            if total_new <= total or not fresh:
                break
            mu *= 10.0
        if total_new > total:
            if fresh:
                break  # no step lowers the cost: x is the fit
            jac, fresh = jacobian(x, free, r), True  # the secant Jacobian misled: measure it here
            continue
        dx = z - x
        moved, gain = float(np.max(np.abs(dx))), (total - total_new) / max(total, 1e-12)
        if moved >= FD_STEP / 3:  # Broyden's secant update; shorter steps would measure event reordering
            jac, fresh = jac + np.outer(r_new - r - jac @ dx, dx) / float(dx @ dx), False
        x, r, pred, total = z, r_new, pred_new, total_new
        mu = max(mu / 10.0, 1e-6)
        if moved < MOVED_TOLERANCE or gain < GAIN_TOLERANCE:
            break
    theta = start.copy()
    theta[free] = x * scale[free]
    return ThetaFit(theta, tuple(free), it, pred)


@dataclass(frozen=True)
class BenchFit:
    """The fit of the serving terms to the bench runs, with each file's prediction under the start, the fit and
    the fit without it (leave-one-out; None with a single file or when skipped)."""

    names: tuple[str, ...]
    start: np.ndarray
    theta: np.ndarray
    fitted: tuple[str, ...]
    iterations: int
    cases: list[BenchCase]
    measured: np.ndarray
    start_predicted: np.ndarray
    predicted: np.ndarray
    loo_predicted: np.ndarray | None
    simulations: int = 0  # runs simulated in all (fit and leave-one-out)

    def errors_pct(self, which: str = "fit") -> np.ndarray | None:
        pred = {"fit": self.predicted, "start": self.start_predicted, "loo": self.loo_predicted}[which]
        return None if pred is None else (pred - self.measured) / self.measured * 100.0


def term_scale(start: np.ndarray, floor: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(start), floor)


def fit_bench(assemble: Assemble, names: Sequence[str], start: np.ndarray, floor: np.ndarray,
              runs: Sequence[BenchRun], style: str, max_requests: int | None = None, leave_one_out: bool = True,
              progress: Callable[[str], None] | None = None) -> BenchFit:
    """Fit `names` (theta of `assemble`) to the runs from `start`; leave-one-out refits from the same start."""
    start = np.maximum(np.asarray(start, dtype=float), 0.0)
    scale = term_scale(start, np.asarray(floor, dtype=float))
    say = progress or (lambda text: None)
    start_cal = assemble(start)
    cases = [match_acceptance(bench_case(run, style, max_requests), start_cal) for run in runs]
    predictor = Predictor(assemble, cases)
    every = list(range(len(cases)))
    start_pred = predictor.rows(start, every)
    for i in np.flatnonzero(~np.isfinite(start_pred).all(axis=1)):
        raise BenchError(f"{cases[i].run.path}: no request of this run finishes when simulated with calibration "
                         f"{start_cal.name} ({failure_reason(cases[i], start_cal)}): is it a run of this setting?")
    say(f"fitting {len(names)} serving terms to {len(cases)} runs")
    fit = fit_theta(predictor, every, start, scale)
    loo = None
    if leave_one_out and len(cases) > 1:
        loo = np.empty_like(fit.predicted)
        for i, case in enumerate(cases):
            say(f"leave-one-out {i + 1}/{len(cases)}: refit without {case.run.name}")
            other = fit_theta(predictor, every[:i] + every[i + 1:], start, scale)
            loo[i] = predictor.rows(other.theta, [i])[0]
    return BenchFit(tuple(names), start, fit.theta, tuple(names[j] for j in fit.fitted), fit.iterations, cases,
                    measured_matrix(cases), start_pred, fit.predicted, loo, predictor.simulations)


__all__ = ["BenchCase", "BenchFit", "Predictor", "bench_case", "fit_bench", "fit_theta",
           "match_acceptance", "predict_all", "simulate"]

"""Capacity search: the highest Poisson request rate at which a policy still meets a latency SLO.

Method (what one answer means):

* **Steady-state probes.** A probe at rate r offers Poisson arrivals at r for
  T(r) = max(`probe_duration_s`, `probe_requests` / r) seconds, so every probe, whatever the rate,
  holds at least `probe_requests` arrivals and lasts at least `probe_duration_s`. Each request's
  (prompt, output) pair is drawn with replacement from the trace's pairs, so the probe never runs
  out of requests and its answer depends on the trace's length distribution and the rate, not on
  how many requests the trace has (a trace cut to 300 requests and the same trace at 3,000 give
  the same answer up to the sampling error of the length distribution).
* **Warm-up discarded.** Only requests arriving after W = `warmup` x T are measured (the system
  starts empty; the first requests see no queue). Every measured request must finish (a probe
  whose measured requests fail fails the SLO); the SLO metrics (TTFT, TPOT, E2EL: mean, median,
  p90, p99) are computed over the measured requests only (ITL comes from the whole probe).
* **Bisection** (`find_capacity`): pure, over a rate -> metrics function assumed monotone. It
  checks the bracket ends, optionally grows `hi`, then halves the bracket until narrower than `tol`.
  Every probe of one search uses the same seed (common random numbers), so a search is
  deterministic; the answer is the largest rate *observed* to meet the SLO.
* **Confidence from seeds.** One search runs per seed (`--seeds 0-4`); `capacity_summary` reports
  the mean, std, min and max of the answers and their number. The spread is the sampling noise of
  the probe (arrivals and lengths); a spread larger than `tol` says to lengthen the probes.
* **Replicas scale the bracket.** With R replicas the search brackets [lo, hi x R].
* **Too-short traces.** The trace must hold at least `MIN_LENGTH_PAIRS` requests (refused below,
  ConfigError) and should hold `WARN_LENGTH_PAIRS` (a `warning` column and a printed warning below),
  because the tail of the length distribution, which sets p99 latencies, is then poorly sampled.

SLOs are written `STAT_METRIC:MS`, e.g. `p99_ttft:2000,mean_tpot:50`, where STAT is one of
mean, median, p90, p99 and METRIC one of ttft, tpot, itl, e2el (the summary keys `p99_ttft_ms`...).

`capacity_task` wraps one search on the simulator as a picklable task for `sweep.run_tasks`.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping

import pandas as pd

from specdec_sim.simulator.config import ConfigError
from specdec_sim.simulator.sweep.executors import one_line
from specdec_sim.simulator.sweep.runner import STATUS_ERROR, STATUS_OK, RunSpec, stable_hash, traffic_of
from specdec_sim.simulator.traffic import SYNTHETIC, length_pool

STATS = ("mean", "median", "p90", "p99")
METRICS = ("ttft", "tpot", "itl", "e2el")
MIN_LENGTH_PAIRS = 30  # fewer (prompt, output) pairs than this: refused
MAX_PROBE_ARRIVALS = 1_000_000  # requests of one probe (a typo such as --probe-duration 1e9 is refused)
WARN_LENGTH_PAIRS = 200  # fewer: a warning (the length distribution's tail is poorly sampled)

RunFn = Callable[[float], Mapping[str, float]]


@dataclass(frozen=True)
class Probe:
    """One evaluation of run_fn during the search."""

    rate: float
    ok: bool
    metrics: dict[str, float]


@dataclass
class CapacityResult:
    """Outcome of a search: `capacity` is the largest rate seen meeting the SLO (0.0 if none).

    status: `ok` (bracketed to within tol), `below-bracket` (even `lo` fails), or
    `above-bracket` (`hi`, after any growth, still meets the SLO; capacity is a lower bound).
    """

    capacity: float
    lo: float  # final bracket: lo meets the SLO (or is the original lo)
    hi: float  # final bracket: hi fails the SLO (or is the largest rate tried)
    status: str
    probes: list[Probe] = field(default_factory=list)

    @property
    def evaluations(self) -> int:
        return len(self.probes)

    def metrics_at_capacity(self) -> dict[str, float]:
        hits = [p for p in self.probes if p.ok and p.rate == self.capacity]
        return dict(hits[-1].metrics) if hits else {}


def parse_capacity_slo(text: str) -> dict[str, float]:
    """`p99_ttft:2000,mean_tpot:50` -> {"p99_ttft_ms": 2000.0, "mean_tpot_ms": 50.0}."""
    slo: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition(":")
        key = key.strip().removesuffix("_ms")
        stat, _, metric = key.partition("_")
        if not sep or stat not in STATS or metric not in METRICS:
            raise ConfigError(f"--slo: {item!r} is not STAT_METRIC:MS "
                              f"(STAT in {', '.join(STATS)}; METRIC in {', '.join(METRICS)})")
        try:
            limit = float(value)
        except ValueError:
            raise ConfigError(f"--slo: {item!r}: {value!r} is not a number of milliseconds") from None
        if not (math.isfinite(limit) and limit > 0):
            raise ConfigError(f"--slo: {item!r}: limit must be a finite number > 0 ms")
        slo[f"{key}_ms"] = limit
    if not slo:
        raise ConfigError("--slo: capacity search needs at least one STAT_METRIC:MS limit")
    return slo


def meets_slo(metrics: Mapping[str, float], slo: Mapping[str, float]) -> bool:
    """Every limited metric is present, finite and within its limit, and nothing failed."""
    if metrics.get("failed", 0) or metrics.get("completed", 1) == 0:
        return False
    for key, limit in slo.items():
        value = metrics.get(key)
        if value is None or value != value or value > limit:  # missing or NaN fails
            return False
    return True


def check_bracket(lo: float, hi: float, tol: float) -> None:
    """0 < lo < hi, tol > 0, all finite (NaN compares False everywhere, so test it explicitly)."""
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi, tol)):
        raise ValueError(f"capacity bracket and tolerance must be finite numbers (lo={lo}, hi={hi}, tol={tol})")
    if not 0 < lo < hi:
        raise ValueError(f"capacity bracket must satisfy 0 < lo < hi (got lo={lo}, hi={hi})")
    if tol <= 0:
        raise ValueError(f"capacity tolerance must be > 0 (got {tol})")


def find_capacity(run_fn: RunFn, slo: Mapping[str, float], lo: float, hi: float, tol: float,
                  max_grow: int = 0, max_evals: int = 60) -> CapacityResult:
    """Bisect for the highest rate in [lo, hi] whose metrics meet `slo`, to within `tol`.

    `max_grow` > 0 lets the search double `hi` up to that many times while `hi` still meets the SLO.
    """
    check_bracket(lo, hi, tol)
    probes: list[Probe] = []

    def probe(rate: float) -> bool:
        metrics = dict(run_fn(rate))
        probes.append(Probe(rate, meets_slo(metrics, slo), metrics))
        return probes[-1].ok

    if not probe(lo):
        return CapacityResult(0.0, lo, lo, "below-bracket", probes)
    grown = 0
    while probe(hi):
        if grown >= max_grow:
            return CapacityResult(hi, hi, hi, "above-bracket", probes)
        lo, hi, grown = hi, hi * 2, grown + 1
    while hi - lo > tol and len(probes) < max_evals:
        mid = (lo + hi) / 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return CapacityResult(lo, lo, hi, STATUS_OK, probes)


# ---------------------------------------------------------------- steady-state probes


@dataclass(frozen=True)
class ProbeSpec:
    """How long one probe runs and how much of it is warm-up (see the module docstring)."""

    requests: int = 2000  # at least this many arrivals per probe (expected)
    duration_s: float = 120.0  # and at least this many seconds of arrivals
    warmup: float = 0.25  # fraction of the arrival window discarded before measuring

    def validate(self) -> "ProbeSpec":
        if not (isinstance(self.requests, int) and self.requests >= 10):
            raise ConfigError(f"--probe-requests: must be an integer >= 10 (got {self.requests})")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ConfigError(f"--probe-duration: must be a finite number > 0 s (got {self.duration_s})")
        if not (math.isfinite(self.warmup) and 0 <= self.warmup < 0.9):
            raise ConfigError(f"--warmup: must be a fraction in [0, 0.9) (got {self.warmup})")
        return self

    def check_budget(self, top_rate: float) -> None:
        """Refuse probes that would offer more than MAX_PROBE_ARRIVALS at the highest rate searched."""
        arrivals = max(self.requests, self.duration_s * top_rate)
        if not arrivals <= MAX_PROBE_ARRIVALS:
            raise ConfigError(f"--probe-requests/--probe-duration/--rate-hi: a probe at {top_rate:g} req/s would "
                              f"offer about {arrivals:.3g} requests, more than {MAX_PROBE_ARRIVALS}")

    def window_s(self, rate: float) -> float:
        """T(r) = max(duration, requests / r): the arrival window of a probe at `rate`."""
        return max(self.duration_s, self.requests / rate)


def steady_metrics(result: Any, warmup_s: float) -> dict[str, float]:
    """SLO metrics over the requests arriving at or after `warmup_s` (unfinished ones count as failed)."""
    from specdec_sim.simulator.summary import describe_ms

    req = result.requests
    measured = req[req["arrival_s"] >= warmup_s]
    done = measured[measured["status"] == "finished"]
    out: dict[str, float] = {"measured_requests": len(measured), "completed": len(done),
                             "failed": len(measured) - len(done)}
    for name in ("ttft", "tpot", "e2el"):
        out.update(describe_ms(name, done[f"{name}_ms"].dropna().to_numpy() / 1000.0))
    summary = result.summary
    out.update({k: v for k, v in summary.items() if "_itl_" in k})
    out.update(output_throughput=summary.get("output_throughput"), mean_k=summary.get("mean_k"))
    return out


def simulator_run_fn(base: RunSpec, probe: ProbeSpec = ProbeSpec()) -> RunFn:
    """rate -> steady-state metrics: Poisson arrivals at `rate` for T(rate) s, lengths resampled from
    `base`'s trace, measured after the warm-up; the same seed for every rate."""
    from specdec_sim import traces
    from specdec_sim.simulator.engine import run_simulation
    from specdec_sim.simulator.prepared import prepare_engine

    engine = prepare_engine(base.sim_config())  # once per search: every probe shares the calibration and its view
    lengths = None if base.trace == SYNTHETIC else length_pool(traffic_of(base), cut=True)

    def run(rate: float) -> Mapping[str, float]:
        window = probe.window_s(rate)
        trace = traces.synthetic_trace(rate, duration_s=window, lengths_from=lengths, seed=base.seed)
        result = run_simulation(trace, engine.config, policy=base.policy, seed=base.seed, engine=engine)
        return steady_metrics(result, probe.warmup * window)

    return run


def length_sample_warning(base: RunSpec) -> str:
    """'' when the trace has enough (prompt, output) pairs; a warning below WARN_LENGTH_PAIRS;
    ConfigError below MIN_LENGTH_PAIRS."""
    if base.trace == SYNTHETIC:
        return ""
    n = len(length_pool(traffic_of(base), cut=True).arrival_s)
    where = f"trace {base.trace!r}" + (f" cut to {base.max_requests} requests" if base.max_requests else "")
    if n < MIN_LENGTH_PAIRS:
        raise ConfigError(f"--capacity: {where} has {n} requests; a capacity search resamples lengths "
                          f"from the trace and needs at least {MIN_LENGTH_PAIRS}")
    if n < WARN_LENGTH_PAIRS:
        return (f"{where} has only {n} requests to resample lengths from (< {WARN_LENGTH_PAIRS}): "
                "the tail of the length distribution, which sets p99 latency, is poorly sampled")
    return ""


# ---------------------------------------------------------------- on the simulator


@dataclass(frozen=True)
class CapacityTask:
    """One capacity search on the simulator: `base` fixes everything but the rate (seed included)."""

    base: RunSpec
    slo: tuple[tuple[str, float], ...]
    lo: float = 0.5
    hi: float = 32.0  # per replica: the search brackets [lo, hi x replicas]
    tol: float = 0.25
    max_grow: int = 0
    probe: ProbeSpec = ProbeSpec()

    @property
    def run_id(self) -> str:
        return stable_hash({"capacity": asdict(self)})

    @property
    def bracket(self) -> tuple[float, float]:
        return self.lo, self.hi * self.base.replicas

    def columns(self) -> dict[str, Any]:
        cols = {k: v for k, v in self.base.columns().items() if k not in ("rate", "time_scale")}
        cols.update(slo=",".join(f"{k.removesuffix('_ms')}:{v:g}" for k, v in self.slo),
                    rate_lo=self.bracket[0], rate_hi=self.bracket[1], tol=self.tol,
                    probe_requests=self.probe.requests, probe_duration_s=self.probe.duration_s,
                    warmup=self.probe.warmup)
        return cols


def capacity_task(task: CapacityTask) -> dict[str, Any]:
    """Run one capacity search; returns its table row and never raises."""
    row: dict[str, Any] = {"run_id": task.run_id, **task.columns()}
    start = time.perf_counter()
    try:
        warning = length_sample_warning(task.base)
        lo, hi = task.bracket
        result = find_capacity(simulator_run_fn(task.base, task.probe), dict(task.slo), lo, hi,
                               task.tol, task.max_grow)
        row.update(capacity_rps=result.capacity, bracket_lo=result.lo, bracket_hi=result.hi,
                   search_status=result.status, evaluations=result.evaluations, warning=warning)
        at = result.metrics_at_capacity()
        row.update({f"at_capacity_{k}": at.get(k) for k, _ in task.slo})
        row.update(at_capacity_output_throughput=at.get("output_throughput"),
                   at_capacity_mean_k=at.get("mean_k"),
                   at_capacity_measured_requests=at.get("measured_requests"), status=STATUS_OK, error="")
    except Exception as exc:  # noqa: BLE001 - recorded, the other searches go on
        row.update(status=STATUS_ERROR, error=one_line(exc))
    row["wall_s"] = round(time.perf_counter() - start, 4)
    return row


def capacity_tasks(runs: list[RunSpec], slo: Mapping[str, float], lo: float, hi: float, tol: float,
                   max_grow: int = 0, probe: ProbeSpec = ProbeSpec()) -> list[CapacityTask]:
    """One search per distinct run configuration (seed included) ignoring rate and time scale."""
    check_bracket(lo, hi, tol)
    probe.validate()
    tasks: dict[str, CapacityTask] = {}
    for run in runs:
        base = replace(run, rate=None, time_scale=1.0)
        task = CapacityTask(base, tuple(sorted(slo.items())), lo, hi, tol, max_grow, probe)
        tasks.setdefault(task.run_id, task)
    return list(tasks.values())


def capacity_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (every column but the seed and the search's outcome; seeds pooled): capacity mean, std (ddof=1; 0 for one seed), min, max,
    the number of seeds, and the search statuses seen."""
    ok = df[df["status"] == STATUS_OK] if "status" in df else df
    if ok.empty:
        return ok
    keys = [c for c in ok.columns if c not in _PER_SEARCH and not c.startswith("at_capacity_")]
    grouped = ok.groupby(keys, dropna=False)
    out = grouped["capacity_rps"].agg(capacity_mean="mean", capacity_std="std", capacity_min="min",
                                      capacity_max="max", seeds="count").reset_index()
    out["capacity_std"] = out["capacity_std"].fillna(0.0)
    out["search_status"] = grouped["search_status"].agg(lambda s: ",".join(sorted(set(s)))).to_numpy()
    return out


_PER_SEARCH = {"run_id", "status", "error", "wall_s", "seed", "search_status", "evaluations", "warning",
               "capacity_rps", "bracket_lo", "bracket_hi"}

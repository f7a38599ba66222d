"""Capacity search: the highest Poisson request rate at which a policy still meets a latency SLO.

`find_capacity(run_fn, slo, lo, hi, tol)` is a pure bisection over a rate -> metrics function,
assumed monotone (latency grows with load). It checks the bracket ends first, optionally grows
`hi` until the SLO fails, then halves the bracket until it is narrower than `tol`. The answer is
the largest rate *observed* to meet the SLO. With the simulator behind `run_fn`, every probe
reuses the same seed (common random numbers), so the search is deterministic.

SLOs are written `STAT_METRIC:MS`, e.g. `p99_ttft:2000,mean_tpot:50`, where STAT is one of
mean, median, p90, p99 and METRIC one of ttft, tpot, itl, e2el (the summary keys `p99_ttft_ms`...).

`capacity_task` wraps one search on the simulator as a picklable task for `sweep.run_tasks`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping

from specdec_sim.simulator.config import ConfigError
from specdec_sim.simulator.sweep.runner import STATUS_ERROR, STATUS_OK, RunSpec, build_trace, one_line, stable_hash

STATS = ("mean", "median", "p90", "p99")
METRICS = ("ttft", "tpot", "itl", "e2el")

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
        if limit <= 0:
            raise ConfigError(f"--slo: {item!r}: limit must be > 0 ms")
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


def find_capacity(run_fn: RunFn, slo: Mapping[str, float], lo: float, hi: float, tol: float,
                  max_grow: int = 0, max_evals: int = 60) -> CapacityResult:
    """Bisect for the highest rate in [lo, hi] whose metrics meet `slo`, to within `tol`.

    `max_grow` > 0 lets the search double `hi` up to that many times while `hi` still meets the SLO.
    """
    if not 0 < lo < hi:
        raise ValueError(f"capacity bracket must satisfy 0 < lo < hi (got lo={lo}, hi={hi})")
    if tol <= 0:
        raise ValueError(f"capacity tolerance must be > 0 (got {tol})")
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


# ---------------------------------------------------------------- on the simulator


@dataclass(frozen=True)
class CapacityTask:
    """One capacity search on the simulator: `base` fixes everything but the rate."""

    base: RunSpec
    slo: tuple[tuple[str, float], ...]
    lo: float = 0.5
    hi: float = 32.0
    tol: float = 0.25
    max_grow: int = 0

    @property
    def run_id(self) -> str:
        return stable_hash({"capacity": asdict(self)})

    def columns(self) -> dict[str, Any]:
        cols = {k: v for k, v in self.base.columns().items() if k not in ("rate", "time_scale")}
        cols.update(slo=",".join(f"{k.removesuffix('_ms')}:{v:g}" for k, v in self.slo),
                    rate_lo=self.lo, rate_hi=self.hi, tol=self.tol)
        return cols


def simulator_run_fn(base: RunSpec) -> RunFn:
    """rate -> summary: Poisson arrivals at `rate` on `base`'s trace lengths, same seed each time."""
    from specdec_sim.simulator.engine import run_simulation

    config = base.sim_config()

    def run(rate: float) -> Mapping[str, float]:
        run_spec = replace(base, rate=rate, time_scale=1.0)
        return run_simulation(build_trace(run_spec), config, policy=base.policy, seed=base.seed).summary

    return run


def capacity_task(task: CapacityTask) -> dict[str, Any]:
    """Run one capacity search; returns its table row and never raises."""
    row: dict[str, Any] = {"run_id": task.run_id, **task.columns()}
    start = time.perf_counter()
    try:
        result = find_capacity(simulator_run_fn(task.base), dict(task.slo), task.lo, task.hi,
                               task.tol, task.max_grow)
        row.update(capacity_rps=result.capacity, bracket_lo=result.lo, bracket_hi=result.hi,
                   search_status=result.status, evaluations=result.evaluations)
        at = result.metrics_at_capacity()
        row.update({f"at_capacity_{k}": at.get(k) for k, _ in task.slo})
        row.update(at_capacity_output_throughput=at.get("output_throughput"),
                   at_capacity_mean_k=at.get("mean_k"), status=STATUS_OK, error="")
    except Exception as exc:  # noqa: BLE001 - recorded, the other searches go on
        row.update(status=STATUS_ERROR, error=one_line(exc))
    row["wall_s"] = round(time.perf_counter() - start, 4)
    return row


def capacity_tasks(runs: list[RunSpec], slo: Mapping[str, float], lo: float, hi: float, tol: float,
                   max_grow: int = 0) -> list[CapacityTask]:
    """One search per distinct run configuration ignoring rate and time scale."""
    tasks: dict[str, CapacityTask] = {}
    for run in runs:
        base = replace(run, rate=None, time_scale=1.0)
        task = CapacityTask(base, tuple(sorted(slo.items())), lo, hi, tol, max_grow)
        tasks.setdefault(task.run_id, task)
    return list(tasks.values())

"""Parameter sweeps: expand a grid of simulation runs, execute them in parallel, keep one result table.

A `SweepSpec` lists values per axis (traces, Poisson rates, time scales, policies, calibrations,
replica counts, seeds); `expand_grid` takes the cartesian product into `RunSpec`s, each with a
stable `run_id` (a hash of its configuration); each run is prepared exactly as `simulate` prepares
one (`prepared`: simulator/prepared.py, the same traffic defaults and checks). `run_tasks`
(simulator/sweep/executors.py) executes tasks on local processes (`ProcessPoolExecutor`, spawn
context), in-process (`workers=0`), or on a Dask distributed cluster, and records each finished run:

* `DIR/runs.jsonl`: an append-only journal, one JSON line per finished run (the resume source),
* `DIR/results.parquet` and `DIR/results.csv`: the table, rewritten atomically as runs finish.

Re-running the same sweep into the same directory skips runs whose `run_id` finished with
status `ok`; failed runs are retried. A run that raises is recorded with status `error` and a
one-line message; it does not stop the others.

A run's seed drives both its synthetic arrivals/lengths and the engine, so runs that differ only
in policy see the same requests (common random numbers).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable

import pandas as pd

from specdec_sim.costmodel import DEFAULT_CALIBRATION
from specdec_sim.simulator.traffic import DEFAULT_TRACE
from specdec_sim.simulator.config import ConfigError, SimConfig
from specdec_sim.simulator.sweep.executors import execute_tasks, one_line
from specdec_sim.simulator.sweep.store import STATUS_ERROR, STATUS_OK
from specdec_sim.simulator.traffic import SYNTHETIC, TrafficSpec, load_traffic

# the engine (simpy, policies) is imported where a run is prepared, so a spawned worker imports it only then

MAX_REQUESTS = 50_000_000  # requests of one run (the synthetic-trace limit)
MAX_DURATION_S = 1e9  # float seconds keep microsecond resolution up to here


@dataclass(frozen=True)
class RunSpec:
    """One simulation run: a trace (optionally re-timed as Poisson at `rate`), a policy, a config."""

    trace: str  # bundled name, path to a trace file, or "synthetic"
    policy: str = "none"
    rate: float | None = None  # Poisson request rate (req/s) on the trace's lengths; None = trace timing
    time_scale: float = 1.0  # multiplies the trace's inter-arrival times (2.0 = half the load)
    calibration: str = DEFAULT_CALIBRATION
    replicas: int = 1
    seed: int = 0
    max_requests: int | None = None
    trace_duration_s: float | None = None  # keep arrivals before this time (s)
    engine: tuple[tuple[str, Any], ...] = ()  # extra SimConfig fields, sorted (name, value) pairs

    @property
    def run_id(self) -> str:
        return stable_hash(asdict(self))

    def columns(self) -> dict[str, Any]:
        cols = {k: v for k, v in asdict(self).items() if k != "engine"}
        for name, value in self.engine:
            cols[name] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
        return cols

    def sim_config(self, record_steps: bool = False) -> SimConfig:
        return make_sim_config(self.calibration, self.replicas, dict(self.engine), record_steps)


@dataclass
class SweepSpec:
    """Values per axis; the sweep is their cartesian product."""

    traces: list[str] = field(default_factory=lambda: [DEFAULT_TRACE])  # simulate's default
    policies: list[str] = field(default_factory=lambda: ["none"])
    rates: list[float | None] = field(default_factory=lambda: [None])
    time_scales: list[float] = field(default_factory=lambda: [1.0])
    calibrations: list[str] = field(default_factory=lambda: [DEFAULT_CALIBRATION])
    replicas: list[int] = field(default_factory=lambda: [1])
    seeds: list[int] = field(default_factory=lambda: [0])
    max_requests: int | None = None
    trace_duration_s: float | None = None  # keep arrivals before this time (s)
    engine: dict[str, Any] = field(default_factory=dict)  # SimConfig overrides shared by all runs
    engine_axes: dict[str, list[Any]] = field(default_factory=dict)  # SimConfig options swept over values

    def engine_grid(self) -> list[dict[str, Any]]:
        """Every combination of the engine axes merged over the shared `engine` options."""
        names = sorted(self.engine_axes)
        return [{**self.engine, **dict(zip(names, combo))}
                for combo in itertools.product(*(self.engine_axes[n] for n in names))]

    def validate(self) -> "SweepSpec":
        axes = ("traces", "policies", "rates", "time_scales", "calibrations", "replicas", "seeds")
        for axis in axes:
            if not getattr(self, axis):
                raise ConfigError(f"--{axis.replace('_', '-')}: needs at least one value")
        if any(r is not None and not (math.isfinite(r) and r > 0) for r in self.rates):
            raise ConfigError("--rates: rates must be finite numbers > 0 (req/s)")
        if any(not (math.isfinite(s) and s > 0) for s in self.time_scales):
            raise ConfigError("--time-scales: scales must be finite numbers > 0")
        for name, values in self.engine_axes.items():
            if not values:
                raise ConfigError(f"[engine] {name}: a sweep axis needs at least one value")
        if self.max_requests is not None and not 1 <= self.max_requests <= MAX_REQUESTS:
            raise ConfigError(f"--max-requests: must be in 1..{MAX_REQUESTS}")
        duration = self.trace_duration_s
        if duration is not None and not (math.isfinite(duration) and 0 < duration <= MAX_DURATION_S):
            raise ConfigError(f"--duration: must be a finite number of seconds in (0, {MAX_DURATION_S:g}]")
        if any(not 0 <= s < 2 ** 63 for s in self.seeds):
            raise ConfigError("--seeds: seeds must be integers in 0..2**63-1")
        if duration is not None and self.max_requests is None:
            top = max((r for r in self.rates if r is not None), default=0.0)
            if top * duration > MAX_REQUESTS:
                raise ConfigError(f"--rates/--duration: {top:g} req/s for {duration:g} s is about "
                                  f"{top * duration:.3g} requests, more than {MAX_REQUESTS}")
        if SYNTHETIC in self.traces and None in self.rates:
            raise ConfigError("--trace synthetic needs --rates")
        for calibration, replicas, engine in itertools.product(self.calibrations, self.replicas,
                                                               self.engine_grid()):
            make_sim_config(calibration, replicas, engine)
        return self


def stable_hash(obj: Any) -> str:
    """A short hash of a JSON-able object that does not depend on dict order or the process."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def make_sim_config(calibration: str, replicas: int, engine: dict[str, Any],
                    record_steps: bool = False) -> SimConfig:
    """Build and validate a SimConfig; unknown engine keys raise ConfigError."""
    known = {f.name for f in fields(SimConfig)}
    unknown = sorted(set(engine) - known)
    if unknown:
        raise ConfigError(f"[engine]: unknown SimConfig option(s) {', '.join(unknown)}")
    axes = sorted({"calibration", "replicas"} & set(engine))
    if axes:
        raise ConfigError(f"[engine]: {', '.join(axes)} is a sweep axis (use calibrations/replicas)")
    opts = dict(engine)
    if "position_rates" in opts:
        opts["position_rates"] = tuple(opts["position_rates"])
    opts.setdefault("record_steps", record_steps)
    try:
        return SimConfig(calibration=calibration, replicas=replicas, **opts).validate()
    except TypeError as exc:  # e.g. max_k = "7" in a TOML file
        raise ConfigError(f"[engine]: an option has the wrong type ({exc})") from None


def expand_grid(spec: SweepSpec) -> list[RunSpec]:
    """The cartesian product of the spec's axes; a rate replaces the trace's timing, so with a
    rate the time scale is irrelevant and only 1.0 is kept (duplicates are dropped). An engine axis
    gives each run its own value in `RunSpec.engine`, so a run's id is the same whether its value
    came from an axis or from a single-valued option."""
    runs: dict[str, RunSpec] = {}
    for trace, rate, scale, policy, calib, reps, options, seed in itertools.product(
            spec.traces, spec.rates, spec.time_scales, spec.policies, spec.calibrations,
            spec.replicas, spec.engine_grid(), spec.seeds):
        engine = tuple(sorted(options.items()))
        run = RunSpec(trace=trace, policy=policy, rate=rate, time_scale=1.0 if rate else scale,
                      calibration=calib, replicas=reps, seed=seed, max_requests=spec.max_requests,
                      trace_duration_s=spec.trace_duration_s, engine=engine)
        runs.setdefault(run.run_id, run)
    return list(runs.values())


def traffic_of(run: RunSpec) -> TrafficSpec:
    """The run's traffic exactly as `simulate` describes the same options (with a rate and neither --max-requests
    nor --duration: simulate's --num-requests default, 1000 requests)."""
    return TrafficSpec(trace=run.trace, rate=run.rate, time_scale=run.time_scale, max_requests=run.max_requests,
                       duration_s=run.trace_duration_s)


def prepared(run: RunSpec, record_steps: bool = False):
    """The run prepared as `simulate` prepares one (simulator/prepared.py): same checks, defaults, offered rate."""
    from specdec_sim.simulator.prepared import prepare_run

    return prepare_run(traffic_of(run), run.sim_config(record_steps), run.seed)


def preflight_traces(spec: SweepSpec) -> None:
    """Load every trace as its runs will (each time scale; one request at the highest rate) in this process, so a
    bad file or a time scale beyond float resolution is one error before anything runs."""
    rates = [r for r in spec.rates if r is not None]
    for trace in spec.traces:
        base = TrafficSpec(trace=trace, max_requests=spec.max_requests, duration_s=spec.trace_duration_s)
        if trace != SYNTHETIC and None in spec.rates:
            for scale in spec.time_scales:
                load_traffic(replace(base, time_scale=scale))
        if rates:
            load_traffic(TrafficSpec(trace=trace, rate=max(rates), max_requests=1))


def merge_summary(row: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Summary metrics that never overwrite a config column: a differing value is kept as
    `KEY_name` (`policy_name` = the policy's own name for the spec, `calibration_name`)."""
    return {(f"{k}_name" if k in row else k): v for k, v in summary.items() if k not in row or row[k] != v}


def simulate(run: RunSpec, record_steps: bool = False):
    """Run one simulation in this process and return the engine's SimResult."""
    from specdec_sim.simulator.engine import run_prepared

    return run_prepared(prepared(run, record_steps), run.policy)


def execute_run(run: RunSpec) -> dict[str, Any]:
    """Run one simulation and return its table row; never raises (errors become the row)."""
    row: dict[str, Any] = {"run_id": run.run_id, **run.columns()}
    start = time.perf_counter()
    try:
        from specdec_sim.simulator.summary import offered_rate

        result = simulate(run)
        rate = run.rate if run.rate else offered_rate(result.requests["arrival_s"].to_numpy())
        row["offered_rate"] = rate if isinstance(rate, float) else None  # summary.json's request_rate
        row.update(merge_summary(row, result.summary))
        row.update(status=STATUS_OK, error="")
    except Exception as exc:  # noqa: BLE001 - a failing run is data, not a crash
        row.update(status=STATUS_ERROR, error=one_line(exc))
    row["wall_s"] = round(time.perf_counter() - start, 4)
    return row


def run_tasks(tasks, out_dir: str | os.PathLike, fn: Callable = execute_run, workers: int = 2, dask: Any = None,
              progress: bool = True, name: str = "results", on_row: Callable | None = None,
              announce: Callable | None = None) -> pd.DataFrame:
    """Execute the tasks not yet finished in `out_dir` with `fn` (default: one simulation each); see
    executors.execute_tasks."""
    return execute_tasks(tasks, out_dir, fn, workers, dask, progress, name, on_row, announce)


def run_sweep(spec: SweepSpec, out_dir: str | os.PathLike, workers: int = 2, dask: Any = None,
              progress: bool = True) -> pd.DataFrame:
    """Expand the spec, execute every unfinished run, and return the result table."""
    return run_tasks(expand_grid(spec.validate()), out_dir, execute_run, workers, dask, progress)

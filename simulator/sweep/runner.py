"""Parameter sweeps: expand a grid of simulation runs, execute them in parallel, keep one result table.

A `SweepSpec` lists values per axis (traces, Poisson rates, time scales, policies, calibrations,
replica counts, seeds); `expand_grid` takes the cartesian product into `RunSpec`s, each with a
stable `run_id` (a hash of its configuration). `run_tasks` executes tasks on local processes
(`ProcessPoolExecutor`, spawn context), in-process (`workers=0`), or on a Dask distributed
cluster, and records each finished run:

* `DIR/runs.jsonl`: an append-only journal, one JSON line per finished run (the resume source),
* `DIR/results.parquet` and `DIR/results.csv`: the table, rewritten atomically as runs finish.

Re-running the same sweep into the same directory skips runs whose `run_id` finished with
status `ok`; failed runs are retried. A run that raises is recorded with status `error` and a
one-line message; it does not stop the others.

A run's seed drives both its synthetic arrivals/lengths and the engine, so runs that differ only
in policy see the same requests (common random numbers).
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import pandas as pd

from specdec_sim.costmodel import DEFAULT_CALIBRATION
from specdec_sim.simulator.config import ConfigError, SimConfig
from specdec_sim.simulator.sweep.lifecycle import terminate_workers, worker_init
from specdec_sim.simulator.sweep.store import STATUS_ERROR, STATUS_OK, ResultStore

MAX_REQUESTS = 50_000_000  # requests of one run (the synthetic-trace limit)
MAX_DURATION_S = 1e9  # float seconds keep microsecond resolution up to here
SYNTHETIC = "synthetic"  # trace name: synthetic lengths (no trace file) at the given Poisson rate


class Task(Protocol):
    """Anything `run_tasks` can execute: a stable `run_id` and flat config `columns()`."""

    run_id: str

    def columns(self) -> dict[str, Any]: ...


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

    traces: list[str] = field(default_factory=lambda: ["sharegpt"])
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


def resolve_trace(name: str) -> Path:
    """A path to an existing trace file, or a bundled trace name."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    from specdec_sim import traces  # local import: keeps `import specdec_sim.simulator.sweep.runner` cheap in spawned workers

    try:
        return Path(traces.bundled_trace(name))
    except (KeyError, ValueError, traces.TraceError) as exc:
        raise traces.TraceError(f"--trace {name!r}: not a file and not a bundled trace ({exc})") from None


def preflight_traces(spec: SweepSpec) -> None:
    """Load every trace as its runs will (each time scale; lengths for rates) in this process, so a bad
    file or a time scale beyond float resolution is one error before anything runs."""
    rates = [r for r in spec.rates if r is not None]
    for trace in spec.traces:
        if trace == SYNTHETIC:
            continue
        base = RunSpec(trace, max_requests=spec.max_requests, trace_duration_s=spec.trace_duration_s)
        if None in spec.rates:
            for scale in spec.time_scales:
                build_trace(replace(base, time_scale=scale))
        if rates:
            load_lengths(base)
            build_trace(replace(base, rate=max(rates), trace_duration_s=None,
                                max_requests=1))


def build_trace(run: RunSpec):
    """The run's trace (Poisson arrivals at `rate` on the trace's lengths), all ready at 0 in a closed loop
    without a rate (`max_concurrency` among the engine options), as `simulate` does."""
    from specdec_sim.simulator.traffic import closed_loop_times

    return closed_loop_times(_build_trace(run), run.rate, dict(run.engine).get("max_concurrency"))


def _build_trace(run: RunSpec):
    from specdec_sim import traces

    if run.trace == SYNTHETIC:
        count = ({"duration_s": run.trace_duration_s} if run.max_requests is None
                 else {"num_requests": run.max_requests})
        return traces.synthetic_trace(run.rate, seed=run.seed, **count)
    path = str(resolve_trace(run.trace))
    if run.rate is None:
        return _load_trace(path, os.path.getmtime(path), run.time_scale, run.max_requests,
                           run.trace_duration_s)
    lengths = _load_trace(path, os.path.getmtime(path), 1.0, None, None)
    if run.trace_duration_s is not None and run.max_requests is None:
        return traces.synthetic_trace(run.rate, duration_s=run.trace_duration_s, lengths_from=lengths,
                                      seed=run.seed)
    return traces.synthetic_trace(run.rate, num_requests=run.max_requests or len(lengths),
                                  lengths_from=lengths, seed=run.seed)


def load_lengths(run: RunSpec):
    """The run's trace as given (first `max_requests`, arrivals before `trace_duration_s`): the
    (prompt, output) pairs a capacity probe resamples from."""
    path = str(resolve_trace(run.trace))
    return _load_trace(path, os.path.getmtime(path), 1.0, run.max_requests, run.trace_duration_s)


@functools.lru_cache(maxsize=16)
def _load_trace(path: str, mtime: float, time_scale: float, max_requests: int | None,
                duration_s: float | None):
    """Traces are immutable, so a worker parses each file once for all its runs (keyed by mtime)."""
    from specdec_sim import traces

    return traces.load_trace(path, time_scale=time_scale, max_requests=max_requests, duration_s=duration_s)


def offered_rate(trace: Any) -> float | None:
    """Requests per second offered by a trace: (count - 1) / arrival span; None without a span."""
    arrivals = getattr(trace, "arrival_s", None)
    if arrivals is None or len(arrivals) < 2:
        return None
    span = float(arrivals[-1] - arrivals[0])
    return (len(arrivals) - 1) / span if span > 0 else None


def merge_summary(row: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Summary metrics that never overwrite a config column: a differing value is kept as
    `KEY_name` (`policy_name` = the policy's own name for the spec, `calibration_name`)."""
    return {(f"{k}_name" if k in row else k): v for k, v in summary.items() if k not in row or row[k] != v}


def simulate(run: RunSpec, record_steps: bool = False):
    """Run one simulation in this process and return the engine's SimResult."""
    from specdec_sim.simulator.engine import run_simulation

    trace = build_trace(run)
    return run_simulation(trace, run.sim_config(record_steps), policy=run.policy, seed=run.seed)


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line, with the innermost frame for unexpected exceptions."""
    msg = " ".join(str(exc).split()) or "(no message)"
    text = f"{type(exc).__name__}: {msg}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames and not isinstance(exc, (ValueError, KeyError, FileNotFoundError)):
        last = frames[-1]
        text += f" [{Path(last.filename).name}:{last.lineno}]"
    return text[:500]


def execute_run(run: RunSpec) -> dict[str, Any]:
    """Run one simulation and return its table row; never raises (errors become the row)."""
    row: dict[str, Any] = {"run_id": run.run_id, **run.columns()}
    start = time.perf_counter()
    try:
        from specdec_sim.simulator.engine import run_simulation

        trace = build_trace(run)
        result = run_simulation(trace, run.sim_config(), policy=run.policy, seed=run.seed)
        row["offered_rate"] = run.rate if run.rate else offered_rate(trace)
        row.update(merge_summary(row, result.summary))
        row.update(status=STATUS_OK, error="")
    except Exception as exc:  # noqa: BLE001 - a failing run is data, not a crash
        row.update(status=STATUS_ERROR, error=one_line(exc))
    row["wall_s"] = round(time.perf_counter() - start, 4)
    return row


# ---------------------------------------------------------------- executors


def crash_row(task: Task, exc: BaseException) -> dict[str, Any]:
    """The row of a task whose worker died (BrokenProcessPool, KilledWorker): retried on resume."""
    return {"run_id": task.run_id, **task.columns(), "status": STATUS_ERROR,
            "error": f"worker failed: {one_line(exc)}", "wall_s": float("nan")}


def _iter_local(fn: Callable, tasks: Sequence[Task], workers: int) -> Iterator[dict[str, Any]]:
    if workers == 0:
        yield from (fn(t) for t in tasks)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=worker_init, initargs=(os.getpid(),))
    try:
        owner: dict[Future, Task] = {pool.submit(fn, t): t for t in tasks}
        pending = set(owner)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                exc = fut.exception()
                yield crash_row(owner[fut], exc) if exc else fut.result()
    except BaseException:  # interrupted (Ctrl-C, SIGTERM, generator closed): do not wait for running tasks
        terminate_workers(pool)  # first: shutdown() forgets the processes
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _iter_dask(fn: Callable, tasks: Sequence[Task], client_or_address: Any) -> Iterator[dict[str, Any]]:
    from distributed import Client, as_completed

    own = not isinstance(client_or_address, Client)
    client = Client(client_or_address) if own else client_or_address
    try:
        owner = {client.submit(fn, t, key=f"{getattr(fn, '__name__', 'task')}-{t.run_id}", pure=False): t
                 for t in tasks}
        for fut in as_completed(list(owner)):
            yield crash_row(owner[fut], fut.exception()) if fut.status == "error" else fut.result()
    finally:
        if own:
            client.close()


def iter_results(fn: Callable[[Any], dict[str, Any]], tasks: Sequence[Task], workers: int = 2,
                 dask: Any = None) -> Iterator[dict[str, Any]]:
    """Rows in completion order, from local processes (`workers`; 0 = in-process) or Dask."""
    if dask is not None:
        return _iter_dask(fn, tasks, dask)
    return _iter_local(fn, tasks, workers)


def run_tasks(tasks: Sequence[Task], out_dir: str | os.PathLike, fn: Callable = execute_run,
              workers: int = 2, dask: Any = None, progress: bool = True, name: str = "results",
              on_row: Callable[[dict[str, Any]], None] | None = None,
              announce: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Execute the tasks not yet finished in `out_dir`, recording each as it completes.

    Returns the full table (earlier runs included). Tasks are run by `fn`, a picklable
    top-level function returning a row dict with `run_id` and `status`. `announce(resumed, total)`
    is called once before anything runs.
    """
    store = ResultStore.open(out_dir, name)
    done = store.finished()
    todo = [t for t in tasks if t.run_id not in done]
    skipped, failed = len(tasks) - len(todo), 0
    if announce:
        announce(skipped, len(tasks))
    try:
        with _progress_bar(progress) as bar:
            bar_task = bar.add_task(f"({skipped} resumed)", total=len(tasks), completed=skipped)
            rows = iter_results(fn, todo, workers, dask) if todo else iter(())
            try:
                for row in rows:
                    store.add(row)
                    failed += row.get("status") != STATUS_OK
                    bar.update(bar_task, advance=1, description=f"({skipped} resumed, {failed} failed)")
                    if on_row:
                        on_row(row)
            finally:  # an interrupt outside the generator still stops the workers now
                close = getattr(rows, "close", None)
                if close:
                    close()
    finally:
        store.write_final_table()
    return store.frame()


def _progress_bar(enabled: bool):
    """A rich progress bar over runs (disabled: a no-op with the same interface)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[bold]sweep[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)


def run_sweep(spec: SweepSpec, out_dir: str | os.PathLike, workers: int = 2, dask: Any = None,
              progress: bool = True) -> pd.DataFrame:
    """Expand the spec, execute every unfinished run, and return the result table."""
    return run_tasks(expand_grid(spec.validate()), out_dir, execute_run, workers, dask, progress)

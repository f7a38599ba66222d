"""`sweep`: run a grid of simulations (or capacity searches) in parallel into one result table.

    sweep --trace sharegpt --max-requests 800 --policies "none;fixed:3;smartspec" \\
          --time-scales 1,4 --seeds 0,1 --out runs/ [--workers 2 | --dask tcp://HOST:8786]
    sweep --config experiments/smartspec_sharegpt/config.toml
    sweep --capacity --capacity-slo p99_ttft:2000,mean_tpot:50 --trace sharegpt \\
          --policies "none;fixed:3" --rate-lo 0.5 --rate-hi 32 --tol 0.25 --out cap/

Policy specs contain commas (`smartspec:k_max=5,interval=10`), so `--policies` separates specs
with ';' (or repeat `--policy SPEC`), as in `simulate`. Other list options are comma separated.
Every engine option of `simulate` (`--max-k`, `--acceptance`, `--chunked-prefill`, `--slo`, ...)
is accepted with the same name and applies to every run; `--set KEY=VALUE` sets any SimConfig
field by name. `--slo` is the per-request goodput SLO (`ttft:200,tpot:50`, as `simulate`);
`--capacity-slo` is the latency SLO a capacity search must meet (`p99_ttft:2000,mean_tpot:50`). Options given on
the command line override the TOML file's; relative paths in the file are relative to it.
Exit status: 0 all runs ok, 1 some runs failed (recorded in the table), 2 bad options, 130 interrupted.

TOML file: a [sweep] table with traces, policies, rates, time_scales, calibrations, replicas,
seeds (lists), max_requests, trace_duration_s, out, plot, workers, dask, progress; an [engine] table
with any SimConfig field (max_k = 5, acceptance = 0.5, slo_ms = {ttft = 200}); and, for a capacity
search, a [capacity] table with slo, lo, hi, tol, grow. With --dask, every Dask worker must be
able to import specdec_sim (same environment as this command).
"""
from __future__ import annotations

import argparse
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from specdec_sim.policies.registry import parse_scalar
from specdec_sim.simulator.cli import add_policy_options
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.options import add_options, option_fields
from specdec_sim.simulator.sweep.runner import SYNTHETIC, SweepSpec, expand_grid, resolve_trace, run_tasks

SWEEP_AXES = ("calibration", "replicas", "record_steps")  # axes of the grid (or per-run), not engine flags
SWEEP_KEYS = {"traces", "policies", "rates", "time_scales", "calibrations", "replicas", "seeds",
              "max_requests", "trace_duration_s", "out", "workers", "dask", "plot", "progress"}
CAPACITY_KEYS = {"slo", "lo", "hi", "tol", "grow"}


class UsageError(Exception):
    """A bad option or config value: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sweep", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    add = p.add_argument
    add("--config", type=Path, help="TOML file with [sweep], [engine] and [capacity] tables")
    add("--trace", action="append", dest="trace_list", metavar="T",
        help="trace file, bundled name (sharegpt, azure-conv, ...) or 'synthetic'; repeatable")
    add("--traces", help="comma-separated traces")
    add_policy_options(p)
    add("--rates", help="Poisson request rates (req/s) on the trace's lengths, comma-separated")
    add("--time-scales", help="multiply the trace's inter-arrival times (2 = half the rate), comma-separated")
    add("--calibrations", help="calibration names or JSON paths, comma-separated")
    add("--replicas", help="replica counts, comma-separated")
    add("--seeds", help="seeds: 0,1,2 or a range 0-9")
    add("--max-requests", type=int, help="first N requests of each trace")
    add("--duration", type=float, dest="trace_duration_s",
        help="first S seconds of each trace (with --rates and no --max-requests: arrivals for S seconds)")
    add("--set", action="append", default=[], metavar="KEY=VALUE", help="any SimConfig field; repeatable")
    add("--out", type=Path, help="result directory (results.parquet/.csv, resumable)")
    add("--workers", type=int, help="local worker processes (default 2; 0 = in this process)")
    add("--dask", metavar="ADDRESS", help="run on an existing Dask cluster, e.g. tcp://host:8786")
    add("--plot", type=Path, metavar="DIR", help="write PNG figures here when done")
    add("--no-progress", action="store_true", help="no progress bar")
    engine = p.add_argument_group("engine (every run; same options as simulate)")
    add_options(p, SimConfig, {name: engine for name in ("serving", "speculation", "output")},
                skip=SWEEP_AXES, suppress_defaults=True)
    cap = p.add_argument_group("capacity search")
    cap.add_argument("--capacity", action="store_true", help="find the highest rate meeting --capacity-slo per policy")
    cap.add_argument("--capacity-slo", metavar="STAT_METRIC:MS,...",
                     help="latency SLO of the capacity search, e.g. p99_ttft:2000,mean_tpot:50")
    cap.add_argument("--rate-lo", type=float, help="bracket low end, req/s (default 0.5)")
    cap.add_argument("--rate-hi", type=float, help="bracket high end, req/s (default 32)")
    cap.add_argument("--tol", type=float, help="stop when the bracket is narrower (default 0.25 req/s)")
    cap.add_argument("--grow", type=int, help="double the high end up to N times if it meets the SLO")
    return p


@dataclass
class Plan:
    """Everything the command will do, after merging the TOML file and the options."""

    spec: SweepSpec
    out: Path
    workers: int = 2
    dask: str | None = None
    plot: Path | None = None
    progress: bool = True
    capacity: dict[str, Any] | None = None  # slo, lo, hi, tol, grow
    extras: dict[str, Any] = field(default_factory=dict)


def _split(text: str, sep: str = ",") -> list[str]:
    return [p.strip() for p in text.split(sep) if p.strip()]


def _numbers(text: str | Sequence, kind: type, option: str) -> list:
    items = _split(text) if isinstance(text, str) else list(text)
    out: list = []
    try:
        for item in items:
            if kind is int and isinstance(item, str) and "-" in item.lstrip("-")[1:] and item.count("-") == 1:
                a, b = (int(x) for x in item.split("-"))
                out.extend(range(a, b + 1))
            else:
                out.append(kind(item))
    except (TypeError, ValueError):
        raise UsageError(f"--{option}: {text!r} is not a list of {kind.__name__}s") from None
    return out


def _scalar(value: Any, kind: type, option: str) -> Any:
    """None, or `value` as `kind` (a TOML string where a number belongs is a usage error)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise UsageError(f"--{option}: {value!r} is not {'an integer' if kind is int else 'a number'}")
    return kind(value)


def load_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: {exc}") from None
    unknown = set(data) - {"sweep", "engine", "capacity"}
    if unknown:
        raise UsageError(f"--config {path}: unknown table(s) {', '.join(sorted(unknown))}")
    for table, keys in (("sweep", SWEEP_KEYS), ("capacity", CAPACITY_KEYS)):
        bad = set(data.get(table, {})) - keys
        if bad:
            raise UsageError(f"--config {path}: unknown key(s) in [{table}]: {', '.join(sorted(bad))}")
    base = path.parent
    sweep = data.setdefault("sweep", {})
    for key in ("out", "plot"):
        if key in sweep:
            sweep[key] = str(base / sweep[key])
    sweep["traces"] = [str(base / t) if (base / t).is_file() else t for t in sweep.get("traces", [])]
    return data


def make_plan(args: argparse.Namespace) -> Plan:
    data = load_toml(args.config) if args.config else {}
    sw, engine, cap = data.get("sweep", {}), dict(data.get("engine", {})), data.get("capacity")

    def pick(opt: Any, key: str, kind: type | None = None, default: Any = None) -> Any:
        if opt is not None:
            return _numbers(opt, kind, key.replace("_", "-")) if kind else opt
        if key in sw:
            value = sw[key]
            return _numbers(value if isinstance(value, list) else [value], kind, key) if kind else value
        return default

    traces = (args.trace_list or []) + (_split(args.traces) if args.traces else [])
    policies = (args.policy_list or []) + (_split(args.policies, ";") if args.policies else [])
    for f in option_fields(SimConfig):  # engine options given by flag, typed by the field's parser
        if f.name in vars(args) and f.name not in SWEEP_AXES:
            value = getattr(args, f.name)
            engine[f.name] = parse_scalar(value) if isinstance(value, str) else value
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"--set: {item!r} is not KEY=VALUE")
        engine[key.strip().replace("-", "_")] = parse_scalar(value.strip())
    spec = SweepSpec(
        traces=traces or list(sw.get("traces", [])) or ["sharegpt"],
        policies=policies or list(sw.get("policies", [])) or ["none"],
        rates=pick(args.rates, "rates", float, [None]),
        time_scales=pick(args.time_scales, "time_scales", float, [1.0]),
        calibrations=_split(args.calibrations) if args.calibrations else list(
            sw.get("calibrations", ["llama3-8b-eagle-h100"])),
        replicas=pick(args.replicas, "replicas", int, [1]),
        seeds=pick(args.seeds, "seeds", int, [0]),
        max_requests=_scalar(pick(args.max_requests, "max_requests"), int, "max-requests"),
        trace_duration_s=_scalar(pick(args.trace_duration_s, "trace_duration_s"), float, "duration"),
        engine=engine)
    capacity = None
    if args.capacity or cap is not None:
        if any("_" in key for key in engine.get("slo_ms", {})):
            raise UsageError("--slo is the per-request goodput SLO (ttft:200,tpot:50); the capacity search's "
                             "latency SLO is --capacity-slo STAT_METRIC:MS")
        capacity = _capacity_options(args, cap or {})
    out = args.out or (Path(sw["out"]) if "out" in sw else None)
    if out is None:
        raise UsageError("--out: a result directory is required")
    plot = args.plot or (Path(sw["plot"]) if "plot" in sw else None)
    workers = _scalar(pick(args.workers, "workers", default=2), int, "workers")
    if workers < 0:
        raise UsageError("--workers: must be >= 0")
    return Plan(spec, out, workers, pick(args.dask, "dask"), plot,
                not args.no_progress and sw.get("progress", True), capacity)


def _capacity_options(args: argparse.Namespace, cap: dict[str, Any]) -> dict[str, Any]:
    from specdec_sim.simulator.sweep.capacity import parse_capacity_slo

    slo_text = args.capacity_slo or cap.get("slo")
    if not slo_text:
        raise UsageError("--capacity: needs --capacity-slo STAT_METRIC:MS[,...], e.g. p99_ttft:2000")
    opts = {"slo": parse_capacity_slo(slo_text),
            "lo": args.rate_lo if args.rate_lo is not None else float(cap.get("lo", 0.5)),
            "hi": args.rate_hi if args.rate_hi is not None else float(cap.get("hi", 32.0)),
            "tol": args.tol if args.tol is not None else float(cap.get("tol", 0.25)),
            "grow": args.grow if args.grow is not None else int(cap.get("grow", 0))}
    if not 0 < opts["lo"] < opts["hi"]:
        raise UsageError("--rate-lo/--rate-hi: need 0 < lo < hi")
    if opts["tol"] <= 0:
        raise UsageError("--tol: must be > 0")
    return opts


def check_plan(plan: Plan) -> None:
    """Fail fast, with one line, on policies, traces and calibrations that cannot work."""
    from specdec_sim.policies import make_policy
    from specdec_sim.simulator.acceptance import resolve_mean_alpha
    from specdec_sim.costmodel import load_calibration

    plan.spec.validate()
    for policy in plan.spec.policies:
        make_policy(policy)
    for trace in plan.spec.traces:
        if trace != SYNTHETIC:
            resolve_trace(trace)
    for calibration in plan.spec.calibrations:
        load_calibration(calibration)
    resolve_mean_alpha(plan.spec.engine.get("acceptance", "mt-bench"))


def execute(plan: Plan) -> int:
    runs = expand_grid(plan.spec)
    dask = plan.dask
    started = time.perf_counter()
    if plan.capacity:
        from specdec_sim.simulator.sweep.capacity import capacity_task, capacity_tasks

        c = plan.capacity
        tasks = capacity_tasks(runs, c["slo"], c["lo"], c["hi"], c["tol"], c["grow"])
        df = run_tasks(tasks, plan.out, capacity_task, plan.workers, dask, plan.progress, name="capacity")
        table, shown = plan.out / "capacity.parquet", ["policy", "capacity_rps", "search_status", "evaluations"]
    else:
        df = run_tasks(runs, plan.out, workers=plan.workers, dask=dask, progress=plan.progress)
        table, shown = plan.out / "results.parquet", []
    wall = time.perf_counter() - started
    failed = int((df["status"] != "ok").sum()) if len(df) else 0
    print(f"sweep: {len(df)} rows ({failed} failed) in {wall:.1f} s -> {table} (+ .csv)")
    _print_table(df, shown)
    if failed:
        errors = df.loc[df["status"] != "ok", "error"].value_counts()
        for message, count in errors.head(3).items():
            print(f"sweep: {count} run(s) failed: {message}", file=sys.stderr)
    if plan.plot and len(df):
        _plots(df, plan)
    return 1 if failed else 0


def _print_table(df, shown: list[str]) -> None:
    """Per-configuration means over seeds, showing only the config columns that vary."""
    from rich.console import Console
    from rich.table import Table

    from specdec_sim.simulator.sweep.plots import summarize

    ok = df[df["status"] == "ok"] if len(df) else df
    if ok.empty:
        return
    view = ok[[c for c in ["trace", "calibration", "replicas"] + shown if c in ok]] if shown else summarize(ok)
    keep = [c for c in view.columns if c in shown or c == "policy" or c not in _CONFIG_COLUMNS
            or view[c].nunique(dropna=False) > 1]
    table = Table(show_lines=False)
    for col in keep:
        table.add_column(str(col), justify="right")
    for row in view[keep].itertuples(index=False):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else Path(str(v)).name for v in row))
    Console().print(table)


_CONFIG_COLUMNS = {"trace", "rate", "time_scale", "calibration", "replicas", "policy"}


def _plots(df, plan: Plan) -> None:
    from specdec_sim.simulator.sweep.plots import plot_capacity, plot_sweep, plot_timeline
    from specdec_sim.simulator.sweep.runner import simulate

    if plan.capacity:
        print(f"sweep: wrote {plot_capacity(df, plan.plot / 'capacity.png')}")
        return
    paths = plot_sweep(df, plan.plot)
    run = _timeline_run(plan)
    if run is not None:
        try:
            steps = simulate(run, record_steps=True).steps
            title = f"{run.policy} on {Path(run.trace).name} at {run.rate or run.time_scale}"
            paths.append(plot_timeline(steps, plan.plot / "timeline_k_alpha.png", title=title))
        except Exception as exc:  # noqa: BLE001 - the table is already written
            print(f"sweep: warning: timeline plot skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
    for path in paths:
        print(f"sweep: wrote {path}")


def _timeline_run(plan: Plan):
    """The run to re-simulate with step logs: the first adaptive policy (else the first non-`none`
    one) at the middle rate or time scale, first seed."""
    from dataclasses import replace

    runs = expand_grid(plan.spec)
    spec_runs = ([r for r in runs if r.policy.split(":")[0] not in ("none", "fixed")]
                 or [r for r in runs if r.policy != "none"] or runs)
    if not spec_runs:
        return None
    keyed = sorted({(r.rate or 0.0, r.time_scale) for r in spec_runs})
    rate, scale = keyed[len(keyed) // 2]
    pick = [r for r in spec_runs if (r.rate or 0.0, r.time_scale) == (rate, scale)][0]
    return replace(pick, seed=plan.spec.seeds[0])


def main(argv: Sequence[str] | None = None) -> int:
    try:  # every validation error (ConfigError, PolicySpecError, TraceError, ...) is a ValueError
        plan = make_plan(build_parser().parse_args(argv))
        check_plan(plan)
    except (UsageError, ValueError, TypeError, OSError) as exc:
        print(f"sweep: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    try:
        return execute(plan)
    except KeyboardInterrupt:
        print(f"sweep: interrupted; finished runs are in {plan.out}, rerun the same command to resume",
              file=sys.stderr)
        return 130
    except (OSError, TimeoutError) as exc:
        print(f"sweep: error: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

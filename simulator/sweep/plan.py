"""What a `sweep` command will do: its options and TOML file merged into a `SweepPlan` (grid, output, capacity).

`make_sweep_plan(args)` reads the parsed options and the `--config` TOML file ([sweep], [engine] and
[capacity] tables; options override the file; relative paths in the file are relative to it) and
returns a `SweepPlan`, or raises `UsageError` with one line naming the option or key.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from specdec_sim.costmodel import DEFAULT_CALIBRATION
from specdec_sim.policies.registry import parse_scalar
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.options import option_fields
from specdec_sim.simulator.sweep.runner import SweepSpec
from specdec_sim.simulator.traffic import DEFAULT_TRACE

SWEEP_AXES = ("calibration", "replicas", "record_steps")  # axes of the grid (or per-run), not engine flags
SWEEP_KEYS = {"traces", "policies", "rates", "time_scales", "calibrations", "replicas", "seeds",
              "max_requests", "trace_duration_s", "out", "workers", "dask", "plot", "progress"}
CAPACITY_KEYS = {"slo", "lo", "hi", "tol", "grow", "probe_requests", "probe_duration", "warmup"}
MAX_AXIS_VALUES = 100_000  # values of one list option (a typo such as 0-1000000000 is refused)
MAX_WORKERS = 1024
MAX_GROW = 20  # doublings of the capacity bracket's high end
LIST_VALUED = {"position_rates"}  # engine options whose single value is a list: a list of lists is an axis


class UsageError(Exception):
    """A bad option or config value: printed as one line, exit status 2."""


@dataclass
class SweepPlan:
    """Everything the command will do, after merging the TOML file and the options."""

    spec: SweepSpec
    out: Path
    workers: int = 2
    dask: str | None = None
    plot: Path | None = None
    progress: bool = True
    capacity: dict[str, Any] | None = None  # slo, lo, hi, tol, grow
    extras: dict[str, Any] = field(default_factory=dict)
    resume: bool = False  # --resume: writing where git tracks files (committed results) is allowed


def _split(text: str, sep: str = ",") -> list[str]:
    return [p.strip() for p in text.split(sep) if p.strip()]


def _numbers(text: str | Sequence, kind: type, option: str) -> list:
    items = _split(text) if isinstance(text, str) else list(text)
    out: list = []
    try:
        for item in items:
            if kind is int and isinstance(item, str) and "-" in item.lstrip("-")[1:] and item.count("-") == 1:
                a, b = (int(x) for x in item.split("-"))
                if b - a >= MAX_AXIS_VALUES:
                    raise UsageError(f"--{option}: {item!r} has {b - a + 1} values, more than {MAX_AXIS_VALUES}")
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
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"--config {path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
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
    for key in ("traces", "calibrations"):
        if key in sweep:
            values = sweep[key] if isinstance(sweep[key], list) else [sweep[key]]
            sweep[key] = [_relative_to(base, str(v)) for v in values]
    return data


def _relative_to(base: Path, value: str) -> str:
    """A trace or calibration given in a config file: a path (it exists next to the file, or it has
    a '/' or a file suffix) is resolved against the file's folder; a bundled name is kept."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    if (base / path).exists() or "/" in value or path.suffix:
        return str(base / path)
    return value


def _engine_options(args: argparse.Namespace, table: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list]]:
    """Single-valued engine options and engine axes (a TOML list, or a --set KEY given several values)."""
    engine: dict[str, Any] = {}
    axes: dict[str, list] = {}
    for key, value in table.items():
        nested = key in LIST_VALUED and isinstance(value, list) and any(isinstance(v, list) for v in value)
        if isinstance(value, list) and (key not in LIST_VALUED or nested):
            axes[key] = list(value)
        else:
            engine[key] = value
    for f in option_fields(SimConfig):  # engine options given by flag, typed by the field's parser
        if f.name in vars(args) and f.name not in SWEEP_AXES:
            value = getattr(args, f.name)
            engine[f.name] = parse_scalar(value) if isinstance(value, str) else value
            axes.pop(f.name, None)
    given: dict[str, list] = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set: {item!r} is not KEY=VALUE")
        values = given.setdefault(key.strip().replace("-", "_"), [])
        if (parsed := parse_scalar(value.strip())) not in values:
            values.append(parsed)
    for key, values in given.items():
        engine.pop(key, None)
        axes.pop(key, None)
        if len(values) == 1:
            engine[key] = values[0]
        else:
            axes[key] = values
    for key, values in axes.items():
        if not values:
            raise UsageError(f"[engine] {key}: an empty list (give one value, or several to sweep)")
    return engine, axes


def make_sweep_plan(args: argparse.Namespace) -> SweepPlan:
    data = load_toml(args.config) if args.config else {}
    sw, cap = data.get("sweep", {}), data.get("capacity")
    engine, engine_axes = _engine_options(args, dict(data.get("engine", {})))

    def pick(opt: Any, key: str, kind: type | None = None, default: Any = None) -> Any:
        if opt is not None:
            return _numbers(opt, kind, key.replace("_", "-")) if kind else opt
        if key in sw:
            value = sw[key]
            return _numbers(value if isinstance(value, list) else [value], kind, key) if kind else value
        return default

    traces = (args.trace_list or []) + (_split(args.traces) if args.traces else [])
    policies = (args.policy_list or []) + (_split(args.policies, ";") if args.policies else [])
    spec = SweepSpec(
        traces=traces or list(sw.get("traces", [])) or [DEFAULT_TRACE],
        policies=policies or list(sw.get("policies", [])) or ["none"],
        rates=pick(args.rates, "rates", float, [None]),
        time_scales=pick(args.time_scales, "time_scales", float, [1.0]),
        calibrations=_split(args.calibrations) if args.calibrations else list(
            sw.get("calibrations", [DEFAULT_CALIBRATION])),
        replicas=pick(args.replicas, "replicas", int, [1]),
        seeds=pick(args.seeds, "seeds", int, [0]),
        max_requests=_scalar(pick(args.max_requests, "max_requests"), int, "max-requests"),
        trace_duration_s=_scalar(pick(args.trace_duration_s, "trace_duration_s"), float, "duration"),
        engine=engine, engine_axes=engine_axes)
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
    if not 0 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers: must be in 0..{MAX_WORKERS}")
    return SweepPlan(spec, out, workers, pick(args.dask, "dask"), plot, not args.no_progress and sw.get("progress", True),
                     capacity, resume=bool(getattr(args, "resume", False)))


def refuse_tracked_outputs(plan: SweepPlan) -> None:
    """UsageError when --out or --plot holds files git tracks (committed results, figures) and --resume was not
    given: a sweep never modifies tracked files unless asked to resume there."""
    from specdec_sim.simulator.sweep.store import tracked_files

    if plan.resume:
        return
    for option, directory in (("--out", plan.out), ("--plot", plan.plot)):
        tracked = tracked_files(directory) if directory is not None else []
        if tracked:
            raise UsageError(f"{option} {directory}: holds {len(tracked)} file(s) git tracks (committed results or "
                             f"figures, e.g. {Path(tracked[0]).name}), which a sweep changes only when asked: give "
                             f"another {option} for a fresh run, or --resume to continue the sweep there")


def _capacity_options(args: argparse.Namespace, cap: dict[str, Any]) -> dict[str, Any]:
    from specdec_sim.simulator.sweep.capacity import ProbeSpec, parse_capacity_slo

    slo_text = args.capacity_slo or cap.get("slo")
    if not slo_text:
        raise UsageError("--capacity: needs --capacity-slo STAT_METRIC:MS[,...], e.g. p99_ttft:2000")
    def value(opt: Any, key: str, kind: type, default: Any) -> Any:
        flag = "--" + {"lo": "rate-lo", "hi": "rate-hi"}.get(key, key.replace("_", "-"))
        raw = opt if opt is not None else cap.get(key, default)
        number = _scalar(raw, kind, flag.lstrip("-"))
        if not math.isfinite(number):
            raise UsageError(f"{flag}: {raw!r} is not a finite number")
        return number

    opts = {"slo": parse_capacity_slo(slo_text),
            "lo": value(args.rate_lo, "lo", float, 0.5), "hi": value(args.rate_hi, "hi", float, 32.0),
            "tol": value(args.tol, "tol", float, 0.25), "grow": value(args.grow, "grow", int, 0),
            "probe": ProbeSpec(value(args.probe_requests, "probe_requests", int, ProbeSpec.requests),
                               value(args.probe_duration, "probe_duration", float, ProbeSpec.duration_s),
                               value(args.warmup, "warmup", float, ProbeSpec.warmup)).validate()}
    if not 0 < opts["lo"] < opts["hi"]:
        raise UsageError("--rate-lo/--rate-hi: need 0 < lo < hi")
    if opts["tol"] <= 0:
        raise UsageError(f"--tol: must be > 0 req/s (got {opts['tol']:g})")
    if not 0 <= opts["grow"] <= MAX_GROW:
        raise UsageError(f"--grow: must be in 0..{MAX_GROW}")
    return opts



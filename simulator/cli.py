"""`simulate`: replay a trace through a simulated serving cluster under one or more speculation policies.

Example: simulate --trace azure-conv --policy none --policy fixed:3 --policy smartspec --out runs/demo
Writes, per policy, summary.json (vLLM `bench serve` keys), requests.csv and steps.parquet, plus
comparison.csv and config.json across policies, and prints a side-by-side table with the speedup
over `none`. Every option is checked (and --out is created and probed) before the first policy
runs. Ctrl-C or SIGTERM stops between or inside policies; finished policies stay complete in --out
and `--resume` skips them. Exit 0 even when requests fail (as `vllm bench serve`), unless
--fail-on-error; 2 for bad options; 130/143 when interrupted by SIGINT/SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import specdec_sim
from specdec_sim.costmodel import CalibrationError
from specdec_sim.safe_output import interrupt_exit_code, sigterm_as_interrupt, write_atomic, write_text_atomic
from specdec_sim.policies import PolicySpecError
from specdec_sim.acceptance.rates import AcceptanceError
from specdec_sim.simulator.config import ConfigError, SimConfig
from specdec_sim.cli_support import OneLineParser, fail
from specdec_sim.simulator.options import DefaultsOnceFormatter, add_options, from_namespace, option_fields
from specdec_sim.simulator.preflight import check_out, check_policies, file_sha256, policy_slug
from specdec_sim.simulator.prepared import PreparedRun, prepare_engine, prepare_run
from specdec_sim.simulator.traffic import TrafficSpec, inapplicable, trace_path
from specdec_sim.traces import TraceError

DEFAULT_POLICIES = ("none", "fixed:3", "smartspec")
MAX_SEED = 2**63 - 1
EXIT_FAILED_REQUESTS = 1  # with --fail-on-error
USER_ERRORS = (ConfigError, CalibrationError, PolicySpecError, AcceptanceError, TraceError, ValueError, OSError)


def parse_seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..2**63-1, got {seed}")
    return seed


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="simulate", description=__doc__.split("\n")[0], formatter_class=DefaultsOnceFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {specdec_sim.__version__}")
    groups = {name: p.add_argument_group(name) for name in ("traffic", "serving", "speculation", "output")}
    add_options(p, TrafficSpec, groups)
    add_policy_options(groups["serving"])
    add_options(p, SimConfig, groups)
    o = groups["output"]
    o.add_argument("--seed", type=parse_seed, default=0, help="random seed (same seed, same bytes)")
    o.add_argument("--out", default=None, help="directory for summary.json, requests.csv, steps.parquet")
    o.add_argument("--resume", action="store_true", help="skip policies already finished in --out by an earlier "
                   "run with the same options (after Ctrl-C or SIGTERM)")
    o.add_argument("--fail-on-error", action="store_true", help="exit 1 if any request of any policy failed "
                   "(without it: a warning line and exit 0, as vllm bench serve)")
    add_progress_option(o)
    return p


def add_progress_option(group, dest: str = "quiet") -> None:
    """`--no-progress`, the same in `simulate` and `sweep`; `--quiet` is accepted as its other name (undocumented:
    one name per thing in `--help`)."""
    group.add_argument("--no-progress", dest=dest, action="store_true", default=False, help="no progress bar")
    group.add_argument("--quiet", dest=dest, action="store_true", default=False, help=argparse.SUPPRESS)


def add_policy_options(group) -> None:
    """`--policy SPEC` (repeatable) and `--policies "A;B"`: the same in `simulate` and `sweep`."""
    group.add_argument("--policy", action="append", dest="policy_list", default=None, metavar="NAME[:k=v,...]",
                       help="speculation policy, or module:Class[:k=v,...] for your own; repeat to compare several "
                            f"on the same trace and seed (default: {' '.join(DEFAULT_POLICIES)})")
    group.add_argument("--policies", default=None, metavar="A;B;...",
                       help="';'-separated policy specs (use --policy for specs that contain ';')")


def policy_specs(args: argparse.Namespace, default: tuple[str, ...] = DEFAULT_POLICIES) -> list[str]:
    """Every policy spec given by --policy and --policies, in order, or `default`."""
    specs = list(args.policy_list or [])
    if args.policies:
        specs += [p.strip() for p in args.policies.split(";") if p.strip()]
    return specs or list(default)


def given_options(argv: list[str], cls: type = TrafficSpec) -> set[str]:
    """Field names of `cls` whose option appears in `argv` (parsed exactly as `simulate` parses them)."""
    unset = object()
    parser = build_parser()
    parser.set_defaults(**{f.name: unset for f in option_fields(cls)})
    args = parser.parse_args(argv)
    return {f.name for f in option_fields(cls) if getattr(args, f.name) is not unset}


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return from_namespace(SimConfig, args).validate()


def build_run_info(traffic: TrafficSpec, trace, seed: int, argv: list[str]) -> dict:
    """What produced the results, for summary.json and config.json."""
    path = trace_path(traffic.trace)
    return {"trace": traffic.trace, "trace_path": str(Path(path).resolve()), "trace_sha256": file_sha256(path),
            "rate": traffic.rate, "burstiness": traffic.burstiness, "num_requests": len(trace),
            "time_scale": traffic.time_scale, "duration": traffic.duration_s, "max_requests": traffic.max_requests,
            "max_concurrency": None, "seed": seed, "command": shlex.join(["simulate", *argv]),
            "version": specdec_sim.__version__}


@dataclass
class Invocation:
    """One `simulate` call: the prepared run (requests, engine), the policies, where results go; checked before
    the first policy runs."""

    run: PreparedRun
    specs: list[str]
    out: Path | None
    run_info: dict
    resumed: dict[str, Any] = field(default_factory=dict)  # spec -> its result loaded from --out

    @property
    def config(self) -> SimConfig:
        return self.run.config

    @property
    def traffic(self) -> TrafficSpec:
        return self.run.traffic

    @property
    def trace(self):
        return self.run.trace

    @property
    def seed(self) -> int:
        return self.run.seed


def make_invocation(args: argparse.Namespace, argv: list[str]) -> Invocation:
    """Parse, check and prepare everything; raises the one-line errors of `main`."""
    if args.resume and not args.out:
        raise ConfigError("--resume: needs --out (the directory of the interrupted run)")
    traffic = from_namespace(TrafficSpec, args).validate()
    problem = inapplicable(traffic, given_options(argv))
    if problem:
        raise ConfigError(problem)
    config = config_from_args(args)
    specs = policy_specs(args)
    engine = prepare_engine(config)  # the calibration, its policy view and the KV cache: checked once, here
    check_policies(specs, config)
    check_batch_ranges(specs, engine.limits.max_num_seqs)
    run = prepare_run(traffic, config, args.seed, engine)
    out = Path(args.out) if args.out else None
    run_info = build_run_info(traffic, run.trace, args.seed, argv)
    run_info["max_concurrency"] = config.max_concurrency
    plan = Invocation(run, specs, out, run_info)
    if out is not None:
        check_out(out, specs)
        if args.resume:
            plan.resumed = load_finished(plan)
        write_config(plan)
    return plan


def check_batch_ranges(specs: list[str], max_num_seqs: int) -> None:
    """Refuse, before anything runs, a policy whose table stops below the engine's max_num_seqs."""
    from specdec_sim.policies import make_policy
    from specdec_sim.policies.vllm import batch_range_problem

    for spec in specs:
        problem = batch_range_problem(make_policy(spec), max_num_seqs, label=spec)
        if problem:
            raise ConfigError(problem)


def config_record(plan: Invocation) -> dict:
    """config.json: the options of the run, as JSON values."""
    return json.loads(json.dumps({"config": plan.config.to_dict(), "policies": plan.specs, "seed": plan.seed,
                                  "trace": plan.traffic.trace, "traffic": plan.traffic.to_dict(),
                                  "run": plan.run_info}, default=float))


def write_config(plan: Invocation) -> None:
    text = json.dumps(config_record(plan), indent=2) + "\n"
    write_text_atomic(plan.out / "config.json", text)


RESUME_KEYS = ("config", "traffic", "seed")  # config.json entries that must match for --resume


def load_finished(plan: Invocation) -> dict[str, Any]:
    """The finished results in --out that --resume may reuse; ConfigError if --out holds another run's options.

    A policy directory is reused only if its own summary.json records this run's seed, engine config
    and traffic (a stale directory from an earlier, different run is simulated again).
    """
    finished = finished_dirs(plan.out)
    if not finished:
        return {}
    stored = read_json(plan.out / "config.json")
    now = config_record(plan)
    if stored is None:
        raise ConfigError(f"--resume: {plan.out} has results but no readable config.json to check them against")
    for key in RESUME_KEYS:
        if stored.get(key) != now[key]:
            raise ConfigError(f"--resume: {plan.out} was written with different {key} options; "
                              f"rerun without --resume or use another --out")
    if stored.get("run", {}).get("trace_sha256") != now["run"]["trace_sha256"]:
        raise ConfigError(f"--resume: the trace {plan.traffic.trace} changed since {plan.out} was written")
    return reusable(plan, finished)


def reusable(plan: Invocation, finished: set[str]) -> dict[str, Any]:
    """The specs whose directory in --out is finished and was made by a run with these options, loaded."""
    now = config_record(plan)
    saved = {spec: load_saved(plan.out / policy_slug(spec), spec, plan.config) for spec in plan.specs
             if policy_slug(spec) in finished}
    return {spec: result for spec, result in saved.items() if same_run(result.record, now)}


def same_run(summary: dict, now: dict) -> bool:
    """Whether a policy's summary.json was made with this run's seed, engine config and traffic."""
    traffic = summary.get("traffic")
    if not isinstance(traffic, dict):
        return False
    moved = ("trace_path",)  # the same file may be reached by another path
    return summary.get("seed") == now["seed"] and summary.get("config") == now["config"] and all(
        traffic.get(k) == now["run"].get(k) for k in traffic if k not in moved)


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finished_dirs(out: Path) -> set[str]:
    """Names of the policy directories in `out` whose results are complete."""
    from specdec_sim.simulator.report import finished_policies

    return set(finished_policies(out))


@dataclass
class SavedResult:
    """A finished policy's results read back from --out (what `comparison_frame` needs of a SimResult)."""

    summary: dict
    requests: Any
    steps: Any
    config: SimConfig
    policy_name: str
    record: dict = field(default_factory=dict)  # summary.json as written


NOT_IN_TABLE = ("policy_spec", "config")


def table_entries(record: dict) -> dict:
    """The scalar entries of a summary.json record: its row of comparison.csv."""
    return {k: v for k, v in record.items() if k not in NOT_IN_TABLE and not isinstance(v, (dict, list))}


def load_saved(directory: Path, spec: str, config: SimConfig) -> SavedResult:
    """summary.json (scalar entries, as comparison.csv holds them) and requests.csv of one finished policy."""
    import pandas as pd

    saved = read_json(directory / "summary.json") or {}
    summary = table_entries(saved)
    requests = pd.read_csv(directory / "requests.csv", keep_default_na=False) \
        if (directory / "requests.csv").exists() else None
    return SavedResult(summary, requests, None, config, str(saved.get("policy", spec)), saved)


def run_policies(plan: Invocation, quiet: bool) -> list:
    """Each policy's result, in spec order: loaded when resumed, else simulated and written to --out."""
    from specdec_sim.simulator.engine import run_prepared
    from specdec_sim.simulator.report import progress_reporter, write_result

    results = []
    for spec in plan.specs:
        if spec in plan.resumed:
            results.append(plan.resumed[spec])
            continue
        with progress_reporter(len(plan.trace), f"{spec}", disabled=quiet) as tick:
            result = run_prepared(plan.run, spec, progress=tick)
        if plan.out is not None:  # the comparison row is the summary.json record as written, as a resumed one's is
            record = write_result(result, plan.out / policy_slug(spec), spec, plan.seed, run_info=plan.run_info)
            result = SavedResult(table_entries(record) or result.summary, result.requests, result.steps,
                                 result.config, result.policy_name)
        results.append(result)
    return results


def write_comparison(plan: Invocation, table) -> None:
    write_atomic(plan.out / "comparison.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_config(plan)


def interrupted_message(plan: Invocation | None) -> str:
    if plan is None or plan.out is None:
        return "simulate: interrupted" + ("" if plan is None else " (no --out: nothing kept)")
    names = sorted(reusable(plan, finished_dirs(plan.out)))  # what --resume will skip
    if not names:
        return f"simulate: interrupted before any policy finished; nothing complete in {plan.out}"
    return f"simulate: interrupted after {', '.join(names)}; rerun with --resume to skip them"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    with sigterm_as_interrupt(ctrl_c=True):
        plan = None
        try:
            plan = make_invocation(args, argv)
            for line in plan.run.engine.warnings:
                print(f"simulate: warning: {line}", file=sys.stderr)
            return finish(plan, run_policies(plan, args.quiet), args.fail_on_error)
        except KeyboardInterrupt as exc:
            print(interrupted_message(plan), file=sys.stderr)
            return interrupt_exit_code(exc)
        except USER_ERRORS as exc:
            return fail("simulate", exc)


def finish(plan: Invocation, results: list, fail_on_error: bool) -> int:
    """Write comparison.csv and config.json, print the table; the exit code."""
    from specdec_sim.simulator.report import comparison_frame, pricing_lines, print_comparison

    table = comparison_frame(results, plan.specs)
    if plan.out is not None:
        write_comparison(plan, table)
    print_comparison(table, trace_label=f"{plan.traffic.trace} ({len(plan.trace)} requests)",
                     slo_ms=plan.config.slo_ms)
    print(pricing_lines(plan.run.engine, results))
    failed = any(r.summary.get("failed", 0) for r in results)
    return EXIT_FAILED_REQUESTS if failed and fail_on_error else 0


if __name__ == "__main__":
    sys.exit(main())

"""`simulate`: replay a trace through a simulated serving cluster under one or more speculation policies.

Example: simulate --trace azure-conv --policy none --policy fixed:3 --policy smartspec --out runs/demo
Writes, per policy, summary.json (vLLM `bench serve` keys), requests.csv and steps.parquet, plus
comparison.csv across policies, and prints a side-by-side table with the speedup over `none`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from specdec_sim.simulator.acceptance import AcceptanceError
from specdec_sim.simulator.config import ConfigError, SimConfig
from specdec_sim.costmodel import CalibrationError
from specdec_sim.simulator.options import OneLineParser, add_options, from_namespace
from specdec_sim.simulator.report import comparison_frame, print_comparison
from specdec_sim.simulator.traffic import TrafficSpec, load_traffic

DEFAULT_POLICIES = ("none", "fixed:3", "smartspec")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="simulate", description=__doc__.split("\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    groups = {name: p.add_argument_group(name) for name in ("traffic", "serving", "speculation", "output")}
    add_options(p, TrafficSpec, groups)
    add_policy_options(groups["serving"])
    add_options(p, SimConfig, groups)
    o = groups["output"]
    o.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    o.add_argument("--out", default=None, help="directory for summary.json, requests.csv, steps.parquet")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


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


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return from_namespace(SimConfig, args).validate()


def policy_slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", spec).strip("_") or "policy"


def run_policies(trace, config: SimConfig, specs: list[str], seed: int, out: Path | None, quiet: bool) -> list:
    from specdec_sim.simulator.engine import run_simulation
    from specdec_sim.simulator.report import progress_reporter, write_result

    results = []
    for spec in specs:
        with progress_reporter(len(trace), f"{spec}", disabled=quiet) as tick:
            result = run_simulation(trace, config, spec, seed=seed, progress=tick)
        results.append(result)
        if out is not None:
            write_result(result, out / policy_slug(spec), spec, seed)
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from specdec_sim.policies import PolicySpecError, make_policy
        from specdec_sim.traces import TraceError
    except ImportError as exc:  # pragma: no cover - broken install
        print(f"simulate: error: {exc}", file=sys.stderr)
        return 2
    specs = policy_specs(args)
    out = Path(args.out) if args.out else None
    try:
        config = config_from_args(args)
        for spec in specs:
            make_policy(spec)
        traffic = from_namespace(TrafficSpec, args)
        trace = load_traffic(traffic, args.seed)
        if len(trace) == 0:
            raise ConfigError("--trace: no requests left after --max-requests/--duration")
        results = run_policies(trace, config, specs, args.seed, out, args.quiet)
    except (ConfigError, CalibrationError, PolicySpecError, AcceptanceError, TraceError, ValueError) as exc:
        print(f"simulate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("simulate: interrupted; finished policies are in --out", file=sys.stderr)
        return 130
    table = comparison_frame(results, specs)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "comparison.csv", index=False)
        (out / "config.json").write_text(json.dumps({"config": config.to_dict(), "policies": specs,
                                                     "seed": args.seed, "trace": args.trace}, indent=2) + "\n")
    print_comparison(table, trace_label=f"{args.trace} ({len(trace)} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

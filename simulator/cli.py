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

from specdec_sim.simulator.acceptance import PRESETS, AcceptanceError
from specdec_sim.simulator.config import ConfigError, SimConfig, parse_slo
from specdec_sim.costmodel import DEFAULT_CALIBRATION, CalibrationError, available_calibrations
from specdec_sim.simulator.report import comparison_frame, print_comparison

DEFAULT_POLICIES = ("none", "fixed:3", "smartspec")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simulate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t = p.add_argument_group("traffic")
    t.add_argument("--trace", default="azure-conv",
                   help="trace file (normalized CSV, Azure 2023 CSV or Mooncake JSONL) or a bundled name: "
                        "azure-conv, azure-code, mooncake-conv, sharegpt, arxiv-lengths")
    t.add_argument("--format", choices=("normalized", "azure", "mooncake", "lengths"), default=None,
                   help="force the trace format instead of detecting it")
    t.add_argument("--time-scale", type=float, default=1.0, help="multiply inter-arrival times (2 = half the rate)")
    t.add_argument("--max-requests", type=int, default=None, help="keep the first N requests")
    t.add_argument("--duration", type=float, default=None, help="keep arrivals in the first SECONDS")
    t.add_argument("--rate", type=float, default=None,
                   help="synthetic arrivals at this rate (req/s) with prompt/output lengths resampled from --trace")
    t.add_argument("--burstiness", type=float, default=1.0,
                   help="with --rate: Gamma shape of inter-arrivals (1 = Poisson, <1 burstier)")
    t.add_argument("--num-requests", type=int, default=1000, help="with --rate: requests to generate")
    s = p.add_argument_group("serving")
    s.add_argument("--policy", action="append", default=None, metavar="NAME[:k=v,...]",
                   help=f"speculation policy; repeat to compare several on the same trace and seed "
                        f"(default: {' '.join(DEFAULT_POLICIES)})")
    s.add_argument("--calibration", default=DEFAULT_CALIBRATION,
                   help=f"step-time calibration: a JSON path or a shipped name ({', '.join(available_calibrations())})")
    s.add_argument("--replicas", type=int, default=1, help="model replicas behind the router")
    s.add_argument("--router", default="round-robin", choices=("round-robin", "least-tokens", "random"),
                   help="how arrivals are spread over replicas")
    s.add_argument("--max-num-seqs", type=int, default=256, help="requests in a replica's running batch")
    s.add_argument("--max-num-batched-tokens", type=int, default=8192, help="tokens one step may process")
    s.add_argument("--kv-blocks", type=int, default=None,
                   help="KV-cache blocks per replica (default: derived from GPU memory minus weights)")
    s.add_argument("--block-size", type=int, default=16, help="tokens per KV-cache block")
    s.add_argument("--chunked-prefill", action="store_true", help="mix decodes and prefill chunks in one step")
    s.add_argument("--spec-in-prefill", action="store_true",
                   help="allow speculation in steps that carry prefill (default off, as SmartSpec V0)")
    s.add_argument("--max-k", type=int, default=7, help="largest proposal length (lookahead slots) per request")
    a = p.add_argument_group("speculation")
    a.add_argument("--style", default="draft", choices=("draft", "ngram", "tree"),
                   help="draft model/EAGLE, prompt lookup (n-gram) or Medusa-style tree")
    a.add_argument("--acceptance", default="mt-bench",
                   help=f"per-token acceptance: a rate in (0,1) or a preset ({', '.join(PRESETS)})")
    a.add_argument("--acceptance-spread", type=float, default=None,
                   help="Beta concentration of per-request acceptance around the mean (0 = identical; default 20)")
    a.add_argument("--acceptance-mode", default="independent", choices=("independent", "batch", "per-position"),
                   help="independent draws per request, one shared draw per step, or per-position rates")
    a.add_argument("--position-rates", default="",
                   help="comma-separated conditional acceptance per draft position (per-position mode)")
    a.add_argument("--ngram-match", type=float, default=0.9, help="prompt lookup: chance a step finds a match")
    o = p.add_argument_group("output")
    o.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    o.add_argument("--slo", default="", help="SLO for request goodput, ms: e.g. ttft:200,tpot:50,e2el:5000")
    o.add_argument("--out", default=None, help="directory for summary.json, requests.csv, steps.parquet")
    o.add_argument("--no-step-log", action="store_true", help="do not keep the per-step log (saves memory)")
    o.add_argument("--max-sim-time", type=float, default=None,
                   help="stop the clock at SECONDS; unfinished requests are reported as failed")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    try:
        rates = tuple(float(x) for x in args.position_rates.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--position-rates: {args.position_rates!r} is not a comma-separated list of numbers")
    return SimConfig(
        calibration=args.calibration, replicas=args.replicas, router=args.router, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, kv_blocks=args.kv_blocks, block_size=args.block_size,
        chunked_prefill=args.chunked_prefill, spec_in_prefill_steps=args.spec_in_prefill, max_k=args.max_k,
        style=args.style, acceptance=args.acceptance, acceptance_spread=args.acceptance_spread,
        acceptance_mode=args.acceptance_mode, position_rates=rates, ngram_match_prob=args.ngram_match,
        slo_ms=parse_slo(args.slo), record_steps=not args.no_step_log, max_sim_time_s=args.max_sim_time,
    ).validate()


def load_traffic(args: argparse.Namespace):
    from specdec_sim.traces import bundled_trace, load_trace, synthetic_trace, BUNDLED_TRACES

    path = bundled_trace(args.trace) if args.trace in BUNDLED_TRACES else args.trace
    if args.rate is None:
        return load_trace(path, fmt=args.format, time_scale=args.time_scale, max_requests=args.max_requests,
                          duration_s=args.duration)
    if args.rate <= 0:
        raise ConfigError("--rate: must be > 0 req/s")
    source = load_trace(path, fmt=args.format)
    return synthetic_trace(args.rate, num_requests=args.max_requests or args.num_requests,
                           burstiness=args.burstiness, lengths_from=source, seed=args.seed)


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
    specs = args.policy or list(DEFAULT_POLICIES)
    out = Path(args.out) if args.out else None
    try:
        config = config_from_args(args)
        for spec in specs:
            make_policy(spec)
        trace = load_traffic(args)
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

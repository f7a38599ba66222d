"""Speculation policies against the best fixed k, light load to past saturation (smartspec-reference.md 4.2, 6.1).

Poisson arrivals with prompt/output lengths resampled from the bundled ShareGPT trace, one engine
config, the same trace and seed for every policy. Prints a markdown table of mean E2E latency (ms)
per rate and each policy's ratio to the best of {none, fixed:1..7} at that rate; then a second
workload with widely mixed per-request acceptance (Beta concentration `--spread`) comparing
goodput-greedy with smartspec (and the oracle upper bound).

    /work/venv/bin/python benchmarks/policy_table.py                 # full table (a few minutes)
    /work/venv/bin/python benchmarks/policy_table.py --rates 2,64 --num-requests 400
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine import run_simulation
from specdec_sim.traces import bundled_trace, load_trace, synthetic_trace

BASELINES = ["none"] + [f"fixed:{k}" for k in range(1, 8)]
# the author-named policies run as released; turbospec:counting=position is the improved estimator
# (docs/policy-variants.md)
ADAPTIVE = ["smartspec", "turbospec", "turbospec:counting=position", "goodput-greedy", "oracle"]


@dataclass(frozen=True)
class Workload:
    acceptance: str = "0.5"  # mean per-token acceptance (a number or a preset name)
    spread: float | None = None  # Beta concentration of per-request alpha (None: the engine's default)
    max_num_seqs: int = 1024
    num_requests: int = 600
    seed: int = 1
    engine_options: tuple[tuple[str, object], ...] = ()  # further SimConfig fields (calibration, engine, ...)

    def config(self) -> SimConfig:
        return SimConfig(acceptance=self.acceptance, acceptance_spread=self.spread,
                         max_num_seqs=self.max_num_seqs, record_steps=False, **dict(self.engine_options))


# The TurboSpec authors' linear fit on the V0 engine, priced exactly and with true lengths known: the setting the
# policy claims of tests/test_policies_e2e.py were measured in (README's first policy table).
LEGACY = (("calibration", "turbospec-llama3-8b-eagle-h100"), ("policy_calibration", "same"), ("engine", "v0"),
          ("kv_watermark", 0.0), ("oracle_lengths", True))


def sharegpt_trace(rate: float, workload: Workload):
    lengths = load_trace(bundled_trace("sharegpt-300-long-outputs"))
    return synthetic_trace(rate, num_requests=workload.num_requests, lengths_from=lengths, seed=workload.seed)


def run_grid(rates: list[float], policies: list[str], workload: Workload, log=None) -> dict:
    """{(policy, rate): summary} for every pair, same trace per rate, engine seed 0."""
    results = {}
    for rate in rates:
        trace = sharegpt_trace(rate, workload)
        for policy in policies:
            start = time.perf_counter()
            results[(policy, rate)] = run_simulation(trace, workload.config(), policy, seed=0).summary
            if log:
                log(f"rate {rate:g} {policy}: {results[(policy, rate)]['mean_e2el_ms']:.0f} ms "
                    f"({time.perf_counter() - start:.1f} s)")
    return results


def best_baseline(results: dict, rate: float) -> tuple[str, float]:
    runs = [(results[(p, rate)]["mean_e2el_ms"], p) for p in BASELINES if (p, rate) in results]
    value, name = min(runs)
    return name, value


def ratio_to_best(results: dict, policy: str, rate: float) -> float:
    return results[(policy, rate)]["mean_e2el_ms"] / best_baseline(results, rate)[1]


def markdown_table(results: dict, rates: list[float], policies: list[str]) -> str:
    head = "| policy | " + " | ".join(f"rate {r:g}/s" for r in rates) + " |"
    lines = [head, "|---" * (len(rates) + 1) + "|"]
    for p in policies:
        cells = [f"{results[(p, r)]['mean_e2el_ms']:.0f} ({ratio_to_best(results, p, r):.3f})" for r in rates]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    best = [f"{best_baseline(results, r)[0]}" for r in rates]
    lines.append("| best of none/fixed | " + " | ".join(best) + " |")
    return "\n".join(lines)


def _parse_rates(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="1,2,4,8,16,32,64", help="request rates (req/s), comma-separated")
    ap.add_argument("--num-requests", type=int, default=600)
    ap.add_argument("--acceptance", default="0.5", help="mean alpha or an acceptance preset name")
    ap.add_argument("--max-num-seqs", type=int, default=1024)
    ap.add_argument("--spread", type=float, default=2.0, help="Beta concentration for the mixed workload")
    ap.add_argument("--mixed-rates", default="2,8,32", help="rates for the mixed-acceptance workload")
    ap.add_argument("--mixed-acceptance", default="mt-bench")
    ap.add_argument("--no-oracle", action="store_true")
    ap.add_argument("--legacy", action="store_true", help="the TurboSpec authors' fit on the V0 engine, priced "
                                                           "exactly (the setting of the first README table)")
    ap.add_argument("--calibration", default=None, help="calibration name or path (default: the shipped default)")
    ap.add_argument("--cuda-graphs", default="auto", choices=("auto", "full", "piecewise"),
                    help="simulate's --cuda-graphs (auto: a policy that varies k pays the dynamic-k tax in V1; full: "
                         "an engine that captured every k)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None
    adaptive = [p for p in ADAPTIVE if not (args.no_oracle and p == "oracle")]

    rates = _parse_rates(args.rates)
    options = LEGACY if args.legacy else ((("calibration", args.calibration),) if args.calibration else ())
    options += (("cuda_graphs", args.cuda_graphs),)
    main_load = Workload(acceptance=args.acceptance, max_num_seqs=args.max_num_seqs, num_requests=args.num_requests,
                         engine_options=options)
    print(f"## ShareGPT lengths, Poisson, acceptance {args.acceptance}, max_num_seqs {args.max_num_seqs}, "
          f"--cuda-graphs {args.cuda_graphs}, "
          f"{args.num_requests} requests per rate: mean E2E ms (ratio to best of none/fixed:1..7)\n")
    results = run_grid(rates, BASELINES + adaptive, main_load, log)
    print(markdown_table(results, rates, BASELINES + adaptive))

    mixed_rates = _parse_rates(args.mixed_rates)
    mixed = Workload(acceptance=args.mixed_acceptance, spread=args.spread, max_num_seqs=args.max_num_seqs,
                     num_requests=args.num_requests, engine_options=options)
    print(f"\n## Mixed per-request acceptance ({args.mixed_acceptance}, Beta concentration {args.spread:g}): "
          "mean E2E ms (ratio to best of none/fixed:1..7)\n")
    mixed_policies = BASELINES + ["smartspec", "goodput-greedy"] + ([] if args.no_oracle else ["oracle"])
    results = run_grid(mixed_rates, mixed_policies, mixed, log)
    print(markdown_table(results, mixed_rates, mixed_policies))
    return 0


if __name__ == "__main__":
    sys.exit(main())

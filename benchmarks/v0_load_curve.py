"""Where speculation stops paying in vLLM V0: Llama-3-70B TP4, n-gram k = 4, long-prompt summarisation traffic.

    python benchmarks/v0_load_curve.py                      # the table in docs/validation.md and README
    python benchmarks/v0_load_curve.py --rates 1,4,8 --requests 200 --csv /tmp/v0.csv

Poisson arrivals at each rate with (prompt, output) lengths resampled from the bundled `cnn-lengths` trace
(SpecDecode-Bench's CNN/DailyMail lengths of Llama-3.1-8B-Instruct) and acceptance sampled from the shipped
`cnn-ngram` profile (fitted to SpecDecode-Bench's CNN n-gram spans: summaries copy their article, so prompt
lookup accepts much), served by `--engine v0` on `llama3-70b-tp4-ngram-h100-v0` (batch-expansion scoring,
CUDA graphs up to 256 sequences) under `none` and `fixed:4`, the same requests and seed for both. The same
traffic on the V1 calibration (`llama3-70b-tp4-ngram-h100`) is reported beside it. Nothing here is fitted:
the V0 terms come from vLLM's mechanics and PR #9298's stage times (profiler/roofline_v0.py).
"""
from __future__ import annotations

import argparse
import csv
import sys
import time

from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine import run_prepared
from specdec_sim.simulator.prepared import prepare_engine, prepare_run
from specdec_sim.simulator.traffic import TrafficSpec

RATES = (0.5, 2, 4, 6, 7, 8, 9, 10, 12)
ENGINES = {"v0": "llama3-70b-tp4-ngram-h100-v0", "v1": "llama3-70b-tp4-ngram-h100"}
KEYS = ("mean_e2el_ms", "mean_tpot_ms", "mean_ttft_ms", "p99_e2el_ms", "output_throughput", "completed",
        "mean_acceptance_length")


def curve(engine: str, rates, requests: int, seed: int = 0) -> list[dict]:
    """One row per (rate, policy): the summary keys of KEYS."""
    config = SimConfig(calibration=ENGINES[engine], engine=engine, style="ngram", acceptance_profile="cnn-ngram",
                       max_k=4, record_steps=False)
    prepared = prepare_engine(config)
    rows = []
    for rate in rates:
        run = prepare_run(TrafficSpec(trace="cnn-lengths", rate=rate, num_requests=requests), config, seed, prepared)
        for policy in ("none", "fixed:4"):
            summary = run_prepared(run, policy).summary
            rows.append({"engine": engine, "rate": rate, "policy": policy, **{k: summary[k] for k in KEYS}})
    return rows


def speedups(rows: list[dict]) -> dict[tuple[str, float], float]:
    """(engine, rate) -> mean E2E of none over fixed:4 (> 1: speculation helps)."""
    e2e = {(r["engine"], r["rate"], r["policy"]): r["mean_e2el_ms"] for r in rows}
    return {(e, rate): e2e[(e, rate, "none")] / e2e[(e, rate, "fixed:4")] for e, rate, p in e2e if p == "none"}


def first_rate(rows: list[dict], engine: str, test) -> float | None:
    """The lowest rate whose (none row, fixed:4 row) pair passes `test`, or None."""
    by = {(r["engine"], r["rate"], r["policy"]): r for r in rows}
    rates = sorted({r["rate"] for r in rows if r["engine"] == engine})
    return next((rate for rate in rates if test(by[(engine, rate, "none")], by[(engine, rate, "fixed:4")])), None)


def findings(rows: list[dict], engine: str) -> str:
    """Where `none` saturates (its output tok/s within 5 % of its highest) and where fixed:4 starts to lose."""
    top = max(r["output_throughput"] for r in rows if r["engine"] == engine and r["policy"] == "none")
    saturated = first_rate(rows, engine, lambda none, _: none["output_throughput"] >= 0.95 * top)
    loses = first_rate(rows, engine, lambda none, spec: spec["mean_e2el_ms"] > none["mean_e2el_ms"])
    return (f"{engine.upper()}: none reaches {top:.0f} output tok/s (within 5 % from {saturated:g} req/s); "
            + (f"fixed:4 is slower from {loses:g} req/s" if loses is not None else "fixed:4 never slower"))


def markdown(rows: list[dict]) -> str:
    ratio = speedups(rows)
    by = {(r["engine"], r["rate"], r["policy"]): r for r in rows}
    rates = sorted({r["rate"] for r in rows})
    lines = ["| rate (req/s) | V0 none: mean E2E s / TPOT ms / out tok/s | V0 fixed:4: mean E2E s / TPOT ms / out tok/s "
             "| V0 speedup | V1 speedup |", "|---|---|---|---|---|"]
    for rate in rates:
        none, spec = by[("v0", rate, "none")], by[("v0", rate, "fixed:4")]
        v1 = f"{ratio[('v1', rate)]:.2f}x" if ("v1", rate) in ratio else "-"
        cells = [f"{r['mean_e2el_ms'] / 1000:.1f} / {r['mean_tpot_ms']:.1f} / {r['output_throughput']:.0f}"
                 for r in (none, spec)]
        lines.append(f"| {rate:g} | {cells[0]} | {cells[1]} | {ratio[('v0', rate)]:.2f}x | {v1} |")
    return "\n".join(lines + ["", findings(rows, "v0") + "; " + findings(rows, "v1") + "."])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES), help="comma-separated req/s")
    p.add_argument("--requests", type=int, default=400, help="requests per run")
    p.add_argument("--csv", default=None, help="write every row here")
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    start = time.perf_counter()
    rows = curve("v0", rates, args.requests) + curve("v1", rates, args.requests)
    print(markdown(rows))
    print(f"({args.requests} requests per run, seed 0; {time.perf_counter() - start:.0f} s)")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

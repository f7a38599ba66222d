"""Wall time and peak memory of `simulate`, each case in a fresh process.

Reports wall time and CPU time (process_time: steadier on a shared VM, where wall time varies
by tens of percent between identical runs) of `simulate` itself, and the process's peak RSS.
Cases: the bundled Azure conversation trace (10,108 requests, 30 min of traffic) under `fixed:3`
and `none`, and a 1,000,000-request synthetic Poisson trace (bounded memory: no step log).

    python benchmarks/simulate_speed.py            # all cases
    python benchmarks/simulate_speed.py --quick    # skip the million-request case
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CASES = {
    "azure-conv fixed:3": ["--trace", "azure-conv", "--policy", "fixed:3"],
    "azure-conv none": ["--trace", "azure-conv", "--policy", "none"],
    "azure-conv fixed:3, no step log": ["--trace", "azure-conv", "--policy", "fixed:3", "--no-step-log"],
    "1M synthetic, 16 replicas, fixed:3": ["--trace", "azure-conv", "--rate", "400", "--num-requests", "1000000",
                                           "--replicas", "16", "--policy", "fixed:3", "--no-step-log",
                                           "--max-num-seqs", "512"],
}
CHILD = """
import resource, sys, time
from specdec_sim.simulator.cli import main
t, c = time.perf_counter(), time.process_time()
code = main(sys.argv[1:] + ["--quiet"])
wall, cpu = time.perf_counter() - t, time.process_time() - c
print("BENCH", wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code)
"""


def run_case(args: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    total = time.perf_counter() - start
    line = next((l for l in proc.stdout.splitlines() if l.startswith("BENCH")), None)
    if line is None or proc.returncode:
        raise RuntimeError(f"case failed: {proc.stderr.strip().splitlines()[-1:]}")
    _, wall, cpu, rss_kb, _ = line.split()
    return {"simulate_s": float(wall), "simulate_cpu_s": float(cpu), "process_s": total,
            "peak_rss_mb": int(rss_kb) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the million-request case")
    args = parser.parse_args()
    results = {}
    for name, case in CASES.items():
        if args.quick and name.startswith("1M"):
            continue
        results[name] = run_case(case)
        r = results[name]
        print(f"{name:40s} simulate {r['simulate_s']:7.2f} s wall, {r['simulate_cpu_s']:7.2f} s CPU   "
              f"process {r['process_s']:7.2f} s   peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()

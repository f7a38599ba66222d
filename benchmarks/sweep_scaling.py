"""Sweep scaling: the same 200-run sweep of small simulations on 1 worker process vs 2.

    python benchmarks/sweep_scaling.py [--runs-per-policy 50] [--requests 80] [--workers 1,2]

Every run is a Poisson trace on ShareGPT lengths (`--requests` requests). Both settings use
the process pool (spawned workers), so the 1-worker time includes the same pickling and
journal/table-writing overhead as the 2-worker time. Prints wall time, CPU time, runs/s and the speedup (best time per setting).
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from specdec_sim.simulator.sweep.runner import SweepSpec, expand_grid, run_tasks


def build_runs(runs_per_policy: int, requests: int):
    """4 policies x 5 rates x N/5 seeds: 200 runs by default."""
    seeds = list(range(max(1, runs_per_policy // 5)))
    spec = SweepSpec(traces=["sharegpt"], policies=["none", "fixed:1", "fixed:3", "fixed:5"],
                     rates=[1.0, 2.0, 4.0, 8.0, 16.0], seeds=seeds, max_requests=requests)
    return expand_grid(spec.validate())


def cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_sweep(runs, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one sweep into a fresh directory."""
    with tempfile.TemporaryDirectory() as out:
        cpu0, start = cpu_seconds(), time.perf_counter()
        df = run_tasks(runs, out, workers=workers, progress=False)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    bad = int((df["status"] != "ok").sum())
    if bad:
        raise SystemExit(f"sweep_scaling: {bad} runs failed: {df['error'].iloc[0]}")
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs-per-policy", type=int, default=50)
    p.add_argument("--requests", type=int, default=80)
    p.add_argument("--workers", default="1,2")
    args = p.parse_args()
    runs = build_runs(args.runs_per_policy, args.requests)
    counts = [int(w) for w in args.workers.split(",")]
    print(f"{len(runs)} runs x {args.requests} requests; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f} (other processes compete for the cores)")
    walls: dict[int, list[float]] = {}
    for workers in counts:  # e.g. --workers 1,2,1,2 alternates to even out background load
        wall, cpu = time_sweep(runs, workers)
        walls.setdefault(workers, []).append(wall)
        print(f"workers={workers}: {wall:7.2f} s wall, {len(runs) / wall:6.1f} runs/s, "
              f"{cpu:6.1f} CPU-s (CPU/wall {cpu / wall:.2f}), load {os.getloadavg()[0]:.2f}", flush=True)
    best = {w: min(v) for w, v in walls.items()}
    base = counts[0]
    for workers in best:
        if workers != base:
            print(f"speedup {base} -> {workers} workers (best of {len(walls[workers])}): "
                  f"{best[base] / best[workers]:.2f}x")

if __name__ == "__main__":
    main()

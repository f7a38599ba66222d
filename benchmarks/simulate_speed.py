"""Wall time and peak memory of `simulate`, each case in a fresh process; optionally against a baseline tree.

Reports wall time and CPU time (process_time: steadier on a shared VM, where wall time varies
by tens of percent between identical runs) of `simulate` itself, and the process's peak RSS.
Cases: the bundled Azure conversation trace (10,108 requests, 30 min of traffic) under `fixed:3`
and `none`, and a 1,000,000-request synthetic Poisson trace (bounded memory: no step log).

    python benchmarks/simulate_speed.py            # all cases
    python benchmarks/simulate_speed.py --quick    # skip the million-request case
    git worktree add /tmp/base HEAD~3 && python benchmarks/simulate_speed.py --quick --baseline /tmp/base

With `--baseline DIR` (a checkout of another commit) every case runs alternately in this tree
and in DIR, `--repeats` times each, and the ratio of median CPU times (this / baseline) is
printed: below 1 is faster. Alternating runs share the machine's load, so the ratio is steadier
than two separate benchmark runs. `--same-workload-as-af76b28` adds, in this tree only, the
options that make its run the one af76b28 ran by default (the V0 engine without watermark, true
lengths, the TurboSpec authors' fit, policies pricing with it), so a ratio against that commit
compares the same steps.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "azure-conv fixed:3": ["--trace", "azure-conv", "--policy", "fixed:3"],
    "azure-conv none": ["--trace", "azure-conv", "--policy", "none"],
    "azure-conv fixed:3, no step log": ["--trace", "azure-conv", "--policy", "fixed:3", "--no-step-log"],
    "1M synthetic, 16 replicas, fixed:3": ["--trace", "azure-conv", "--rate", "400", "--num-requests", "1000000",
                                           "--replicas", "16", "--policy", "fixed:3", "--no-step-log",
                                           "--max-num-seqs", "512"],
}
# this tree's options for the workload af76b28 ran by default (before the V1 engine and measured calibrations)
AF76B28_WORKLOAD = ["--engine", "v0", "--kv-watermark", "0", "--oracle-lengths", "--calibration",
                    "turbospec-llama3-8b-eagle-h100", "--policy-calibration", "same"]
# Runs `simulate` from the tree given as argv[1]: the specdec_sim namespace mapped onto its folders
# (from its pyproject.toml) when it has one, else the older top-level packages on sys.path.
CHILD = """
import importlib.util, resource, sys, time, tomllib
from pathlib import Path
tree = Path(sys.argv[1]); args = sys.argv[2:]
sys.path.insert(0, str(tree))
dirs = tomllib.loads((tree / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {}).get("package-dir", {})
if dirs:
    class TreeFinder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name in dirs:
                where = tree / dirs[name]
                return importlib.util.spec_from_file_location(name, where / "__init__.py",
                                                              submodule_search_locations=[str(where)])
    sys.meta_path.insert(0, TreeFinder)
    from specdec_sim.simulator.cli import main
else:
    from simulator.cli import main
t, c = time.perf_counter(), time.process_time()
code = main(args + ["--quiet"])
wall, cpu = time.perf_counter() - t, time.process_time() - c
print("BENCH", wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code)
"""


def run_case(args: list[str], tree: Path = ROOT) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tree), *args], capture_output=True, text=True,
                          cwd=tree)
    total = time.perf_counter() - start
    line = next((l for l in proc.stdout.splitlines() if l.startswith("BENCH")), None)
    if line is None or proc.returncode:
        raise RuntimeError(f"case failed in {tree}: {proc.stderr.strip().splitlines()[-1:]}")
    _, wall, cpu, rss_kb, _ = line.split()
    return {"simulate_s": float(wall), "simulate_cpu_s": float(cpu), "process_s": total,
            "peak_rss_mb": int(rss_kb) / 1024}


def compare(name: str, case: list[str], baseline: Path, repeats: int, here_only: list[str] = ()) -> dict:
    """Alternate runs here (with `here_only` added) and in the baseline tree; the ratio of median CPU (and
    wall) times."""
    here, base = [], []
    for _ in range(repeats):
        here.append(run_case([*case, *here_only]))
        base.append(run_case(case, baseline))
    med = {key: (statistics.median(r[key] for r in here), statistics.median(r[key] for r in base))
           for key in ("simulate_cpu_s", "simulate_s")}
    result = {"this_cpu_s": med["simulate_cpu_s"][0], "baseline_cpu_s": med["simulate_cpu_s"][1],
              "cpu_ratio": med["simulate_cpu_s"][0] / med["simulate_cpu_s"][1],
              "this_wall_s": med["simulate_s"][0], "baseline_wall_s": med["simulate_s"][1],
              "wall_ratio": med["simulate_s"][0] / med["simulate_s"][1], "repeats": repeats}
    print(f"{name:40s} CPU {result['this_cpu_s']:6.2f} s vs baseline {result['baseline_cpu_s']:6.2f} s: "
          f"ratio {result['cpu_ratio']:.3f}   (wall ratio {result['wall_ratio']:.3f}, median of {repeats})",
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the million-request case")
    parser.add_argument("--baseline", type=Path, help="a checkout of another commit to compare against")
    parser.add_argument("--repeats", type=int, default=3, help="with --baseline: alternating runs per case")
    parser.add_argument("--same-workload-as-af76b28", action="store_true",
                        help="run this tree on the workload af76b28 ran by default (see the module docstring)")
    args = parser.parse_args()
    here_only = AF76B28_WORKLOAD if args.same_workload_as_af76b28 else []
    results = {}
    for name, case in CASES.items():
        if args.quick and name.startswith("1M"):
            continue
        if args.baseline:
            results[name] = compare(name, case, args.baseline.resolve(), args.repeats, here_only)
            continue
        results[name] = run_case([*case, *here_only])
        r = results[name]
        print(f"{name:40s} simulate {r['simulate_s']:7.2f} s wall, {r['simulate_cpu_s']:7.2f} s CPU   "
              f"process {r['process_s']:7.2f} s   peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()

"""`sweep`: run a grid of simulations (or capacity searches) in parallel into one result table.

    sweep --trace sharegpt --max-requests 800 --policies "none;fixed:3;smartspec" \\
          --time-scales 1,4 --seeds 0,1 --out runs/ [--workers 2 | --dask tcp://HOST:8786]
    sweep --config experiments/smartspec_sharegpt/config.toml
    sweep --capacity --capacity-slo p99_ttft:2000,mean_tpot:50 --trace sharegpt \\
          --policies "none;fixed:3" --rate-lo 0.5 --rate-hi 32 --tol 0.25 --out cap/

Policy specs contain commas (`smartspec:k_max=5,interval=10`), so `--policies` separates specs
with ';' (or repeat `--policy SPEC`), as in `simulate`. Other list options are comma separated.
Every run is prepared exactly as `simulate` prepares one with the same options (simulator/prepared.py):
the same defaults (trace azure-conv, seed 0, 1000 requests with a rate), the same checks and the same
offered rate, so a sweep row and `simulate`'s summary.json agree. Every engine option of `simulate`
(`--max-k`, `--acceptance`, `--chunked-prefill`, `--slo`, ...) is accepted with the same name and
applies to every run; `--set KEY=VALUE` sets any SimConfig
field by name, and repeating it with other values (`--set acceptance=0.5 --set acceptance=0.8`)
makes that option a sweep axis. `--slo` is the per-request goodput SLO (`ttft:200,tpot:50`, as `simulate`);
`--capacity-slo` is the latency SLO a capacity search must meet (`p99_ttft:2000,mean_tpot:50`). Options given on
the command line override the TOML file's; relative paths in the file are relative to it.
A sweep never changes files git tracks (a committed experiment's results and figures): an --out or --plot
holding any is refused unless --resume asks to continue the sweep there; give another --out (and --plot)
to reproduce an experiment in a fresh directory.
Exit status: 0 all runs ok, 1 some runs failed (recorded in the table), 2 bad options, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM); finished runs are kept either way and a rerun resumes them.

TOML file: a [sweep] table with traces, policies, rates, time_scales, calibrations, replicas,
seeds (lists), max_requests, trace_duration_s, out, plot, workers, dask, progress; an [engine] table
with any SimConfig field (max_k = 5, acceptance = 0.5, slo_ms = {ttft = 200}; a list, such as
acceptance = [0.5, 0.8], is a sweep axis); and, for a capacity search, a [capacity] table with slo,
lo, hi, tol, grow, probe_requests, probe_duration, warmup.

Capacity search: per policy and seed, bisection over Poisson rates in [lo, hi x replicas]; each
probe offers max(probe_requests, probe_duration x rate) arrivals with (prompt, output) lengths
resampled from the trace and measures the requests arriving after the warm-up fraction, so the
answer depends on the trace's length distribution, not its request count. The table gives the
mean (±std) over seeds; traces under 200 requests warn, under 30 are refused.

With --dask, every Dask worker must be able to import specdec_sim (same environment as this
command).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import specdec_sim
from specdec_sim.simulator.cli import add_policy_options, add_progress_option
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.options import add_options
from specdec_sim.cli_support import OneLineParser, fail
from specdec_sim.simulator.traffic import DEFAULT_NUM_REQUESTS, DEFAULT_TRACE
from specdec_sim.simulator.sweep.plan import SWEEP_AXES, SweepPlan, UsageError, make_sweep_plan, refuse_tracked_outputs
from specdec_sim.simulator.sweep.runner import expand_grid, preflight_traces, run_tasks
from specdec_sim.simulator.sweep.tables import print_capacity, print_table

def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="sweep", error_type=UsageError, description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    add = p.add_argument
    add("--version", action="version", version=f"%(prog)s {specdec_sim.__version__}")
    add("--config", type=Path, help="TOML file with [sweep], [engine] and [capacity] tables")
    add("--trace", action="append", dest="trace_list", metavar="T",
        help=f"trace file, bundled name (sharegpt, azure-conv, ...) or 'synthetic'; repeatable (default: "
             f"{DEFAULT_TRACE}, as simulate)")
    add("--traces", help="comma-separated traces")
    add_policy_options(p)
    add("--rates", help="Poisson request rates (req/s) on the trace's lengths, comma-separated; each run generates "
                         f"--max-requests requests (default {DEFAULT_NUM_REQUESTS}, as simulate --rate)")
    add("--time-scales", help="multiply the trace's inter-arrival times (2 = half the rate), comma-separated")
    add("--calibrations", help="calibration names or JSON paths, comma-separated")
    add("--replicas", help="replica counts, comma-separated")
    add("--seeds", help="seeds: 0,1,2 or a range 0-9 (default 0, as simulate)")
    add("--max-requests", type=int, help="first N requests of each trace; with --rates, requests to generate "
                                         "(as simulate --max-requests)")
    add("--duration", type=float, dest="trace_duration_s",
        help="first S seconds of each trace (with --rates and no --max-requests: arrivals for S seconds)")
    add("--set", action="append", default=[], metavar="KEY=VALUE",
        help="any SimConfig field; repeat a KEY with different values to sweep it (an axis)")
    add("--out", type=Path, help="result directory (results.parquet/.csv); rerunning the same command resumes there")
    add("--resume", action="store_true", help="continue the sweep in --out (and --plot) even where git tracks files "
                                              "there: committed results are never changed without it")
    add("--workers", type=int, help="local worker processes (default 2; 0 = in this process)")
    add("--dask", metavar="ADDRESS", help="run on an existing Dask cluster, e.g. tcp://host:8786")
    add("--plot", type=Path, metavar="DIR", help="write PNG figures here when done")
    add_progress_option(p, dest="no_progress")
    engine = p.add_argument_group("engine (every run; same options as simulate)")
    add_options(p, SimConfig, {name: engine for name in ("serving", "speculation", "output")},
                skip=SWEEP_AXES, suppress_defaults=True)
    cap = p.add_argument_group("capacity search")
    cap.add_argument("--capacity", action="store_true", help="find the highest rate meeting --capacity-slo per policy")
    cap.add_argument("--capacity-slo", metavar="STAT_METRIC:MS,...",
                     help="latency SLO of the capacity search, e.g. p99_ttft:2000,mean_tpot:50")
    cap.add_argument("--rate-lo", type=float, help="bracket low end, req/s (default 0.5)")
    cap.add_argument("--rate-hi", type=float, help="bracket high end per replica, req/s (default 32; "
                                                    "x replicas)")
    cap.add_argument("--tol", type=float, help="stop when the bracket is narrower (default 0.25 req/s)")
    cap.add_argument("--grow", type=int, help="double the high end up to N times if it meets the SLO")
    cap.add_argument("--probe-requests", type=int,
                     help="each probe offers at least N Poisson arrivals (default 2000)")
    cap.add_argument("--probe-duration", type=float,
                     help="and at least S seconds of arrivals (default 120)")
    cap.add_argument("--warmup", type=float,
                     help="fraction of each probe's arrival window not measured (default 0.25)")
    return p


def check_plan(plan: SweepPlan) -> None:
    """Fail fast, with one line, on policies, traces and calibrations that cannot work."""
    from specdec_sim.policies import make_policy
    from specdec_sim.acceptance.rates import resolve_mean_alpha
    from specdec_sim.costmodel import load_calibration

    plan.spec.validate()
    refuse_tracked_outputs(plan)
    for policy in plan.spec.policies:
        make_policy(policy)
    preflight_traces(plan.spec)
    for calibration in plan.spec.calibrations:
        load_calibration(calibration)
    for engine in plan.spec.engine_grid():
        resolve_mean_alpha(engine.get("acceptance", "mt-bench"))
        choice = str(engine.get("policy_calibration", "fitted")).strip()
        if choice not in ("fitted", "same"):
            load_calibration(choice)
    if plan.capacity:
        c = plan.capacity
        c["probe"].check_budget(c["hi"] * max(plan.spec.replicas) * 2 ** c["grow"])


def _announce(out: Path):
    """The first line a sweep prints: how many runs were already finished in `out`."""
    def announce(resumed: int, total: int) -> None:
        if resumed and resumed == total:
            print(f"sweep: resumed {resumed} of {total} runs from {out}: all finished, nothing to run "
                  "(use another --out to run again)", flush=True)
        elif resumed:
            print(f"sweep: resumed {resumed} of {total} runs from {out}; running {total - resumed}", flush=True)
        else:
            print(f"sweep: running {total} run{'' if total == 1 else 's'} into {out}", flush=True)

    return announce


def execute(plan: SweepPlan) -> int:
    runs = expand_grid(plan.spec)
    dask = plan.dask
    started = time.perf_counter()
    announce = _announce(plan.out)
    if plan.capacity:
        from specdec_sim.simulator.sweep.capacity import capacity_task, capacity_tasks

        c = plan.capacity
        tasks = capacity_tasks(runs, c["slo"], c["lo"], c["hi"], c["tol"], c["grow"], c["probe"])
        df = run_tasks(tasks, plan.out, capacity_task, plan.workers, dask, plan.progress, name="capacity",
                       announce=announce)
        table = plan.out / "capacity.parquet"
    else:
        df = run_tasks(runs, plan.out, workers=plan.workers, dask=dask, progress=plan.progress,
                       announce=announce)
        table = plan.out / "results.parquet"
    wall = time.perf_counter() - started
    failed = int((df["status"] != "ok").sum()) if len(df) else 0
    print(f"sweep: {len(df)} rows ({failed} failed) in {wall:.1f} s -> {table} (+ .csv)")
    if plan.capacity:
        print_capacity(df)
    else:
        print_table(df)
    if failed:
        errors = df.loc[df["status"] != "ok", "error"].value_counts()
        for message, count in errors.head(3).items():
            print(f"sweep: {count} run(s) failed: {message}", file=sys.stderr)
    if plan.plot and len(df):
        _plots(df, plan)
    return 1 if failed else 0


def _plots(df, plan: SweepPlan) -> None:
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
            load = f"{run.rate:g} req/s (Poisson)" if run.rate else f"time scale x{run.time_scale:g}"
            title = f"{run.policy} on {Path(run.trace).name} at {load}, seed {run.seed}"
            paths.append(plot_timeline(steps, plan.plot / "timeline_k_alpha.png", title=title))
        except Exception as exc:  # noqa: BLE001 - the table is already written
            print(f"sweep: warning: timeline plot skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
    for path in paths:
        print(f"sweep: wrote {path}")


def _timeline_run(plan: SweepPlan):
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


def _preload() -> None:
    """Import what the end of a sweep needs (rich, matplotlib) now, with SIGINT/SIGTERM deferred, so
    a signal never lands inside a C extension's import (which turns it into an ImportError)."""
    from specdec_sim.safe_output import signals_deferred

    with signals_deferred():
        import rich.table  # noqa: F401

        from specdec_sim.simulator.sweep import plots, tables  # noqa: F401


def main(argv: Sequence[str] | None = None) -> int:
    from specdec_sim.safe_output import sigterm_as_interrupt

    with sigterm_as_interrupt():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    from specdec_sim.safe_output import Terminated, interrupt_exit_code

    plan: SweepPlan | None = None
    try:
        try:  # every validation error (ConfigError, PolicySpecError, TraceError, ...) is a ValueError
            plan = make_sweep_plan(build_parser().parse_args(argv))
            check_plan(plan)
        except (UsageError, ValueError, TypeError, OSError) as exc:
            return fail("sweep", exc)
        _preload()
        return execute(plan)
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        where = (f"; finished runs are in {plan.out}, rerun the same command to resume" if plan is not None
                 else " before any run started")
        print(f"sweep: {what}{where}", file=sys.stderr)
        return interrupt_exit_code(exc)
    except (OSError, TimeoutError) as exc:
        return fail("sweep", f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())

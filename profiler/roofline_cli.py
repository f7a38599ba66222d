"""`build-calibration`: make a calibration for a (target, proposer, GPU, TP) without a GPU, and print its error.

    build-calibration --target llama3.1-8b --proposer eagle --gpu h100-sxm --tp 1 \\
                      --name llama3.1-8b-eagle-h100 --out cal.json
    build-calibration --target llama3-70b --proposer ngram --gpu h100-sxm --tp 4 --vidur ../vidur-profiling ...
    build-calibration ... --profile profiles/h100/measurements.csv   # a profile-gpu CSV as a third input
    build-calibration ... --from-bench runs/*.json    # serving terms fitted to your vllm bench serve results

The target forward is the roofline of the architecture on the GPU (costmodel.hardware) with
efficiencies fitted to Vidur's kernel tables (`--vidur DIR`, else the derived numbers bundled with the
package); the serving terms (per-step overhead, speculation overhead, per-forward fixed times) are
fitted to the published measurements of the setting (`--published`, default the bundled CSV) and to a
profile-gpu CSV when given (profiler/roofline_build.py). The calibration loads with
costmodel.load_calibration and is written to a temporary name and renamed. A table of its error
against every measured set is printed. With `--from-bench` the serving terms are then refitted to
`vllm bench serve` result JSONs by simulating each run (profiler/bench_build.py, bench_fit.py,
bench_results.py), and a table of each file's measured and fitted metrics and leave-one-out error is
printed. Bad options and inputs print one line and exit 2.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

import specdec_sim
from specdec_sim.cli_support import OneLineParser, fail
from specdec_sim.costmodel import save_calibration
from specdec_sim.costmodel.architectures import ARCHITECTURES, resolve_name
from specdec_sim.costmodel.hardware import GPUS
from specdec_sim.profiler.roofline_build import BuildError, BuildResult, build_calibration
from specdec_sim.profiler.published import DEFAULT_PUBLISHED
from specdec_sim.profiler.roofline_serving import point_rows
from specdec_sim.profiler.bench_results import STEP_BUDGET, BenchError

LARGE_FIT_ERROR_PCT = 10.0  # --from-bench: a mean error above this gets a note asking whether the setting is right



def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="build-calibration", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--version", action="version", version=f"build-calibration {specdec_sim.__version__}")
    p.add_argument("--target", required=True, help=f"target model: a registry name ({', '.join(ARCHITECTURES)}) "
                   "or a directory with config.json")
    p.add_argument("--proposer", required=True,
                   help="eagle | eagle3 | ngram | draft:<architecture> | tree:eagle | tree:eagle3")
    p.add_argument("--gpu", required=True, help=f"GPU ({', '.join(GPUS)})")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel degree")
    p.add_argument("--engine", default="v1", choices=("v1", "v0"),
                   help="the vLLM engine the calibration describes: v1, or v0 (2024: batch-expansion scoring, CUDA "
                        "graphs up to 256 sequences; profiler/roofline_v0.py)")
    p.add_argument("--vidur", default=None, metavar="DIR",
                   help="Vidur profiling directory (its profiling/compute, profiling/network tables) to fit the "
                        "GPU efficiencies to; default: the bundled derived efficiencies")
    p.add_argument("--published", default=str(DEFAULT_PUBLISHED), metavar="FILE",
                   help="published measurements CSV (profiler/data/published_measurements.csv format); 'none' "
                        "fits no published point (unfitted serving terms then keep the builder's starting values, "
                        "profiler.build.START)")
    p.add_argument("--profile", default=None, metavar="CSV", help="a profile-gpu measurements.csv to fit as well")
    p.add_argument("--name", required=True, help="calibration name")
    p.add_argument("--out", required=True, metavar="FILE.json", help="where to write the calibration")
    p.add_argument("--points", action="store_true", help="also print every measured point beside its prediction")
    bench = p.add_argument_group("fitting to your own vllm bench serve runs")
    bench.add_argument("--from-bench", nargs="+", default=None, metavar="FILE",
                       help="vllm bench serve --save-result JSONs of this setting (with and without speculation, at "
                            "several --max-concurrency or --request-rate): the serving terms are refitted to their "
                            "mean TPOT, ITL, TTFT and output throughput by simulating each run, starting from the "
                            "terms built without them")
    bench.add_argument("--num-speculative-tokens", type=int, default=None, metavar="K",
                       help="with --from-bench: k of the files with speculation that do not state it (no "
                            "spec_decode_per_position_acceptance_rates or spec_decode_draft_tokens)")
    bench.add_argument("--bench-requests", type=int, default=None, metavar="N",
                       help="with --from-bench: simulate at most N requests per file (default: every completed "
                            f"request, unless that takes more than about {STEP_BUDGET:,} engine steps; then a "
                            "sample spread over the prompt lengths, in the order sent)")
    bench.add_argument("--no-leave-one-out", action="store_true",
                       help="with --from-bench: skip the leave-one-out refits (one per file)")
    return p


def error_table(result: BuildResult, points: bool = False) -> str:
    """The calibration's error against every measured set, one line each (and every point with points=True)."""
    cal = result.calibration
    lines = [f"{'measured set':30} {'role':14} {'points':>6} {'mean |err|':>10} {'max |err|':>9} {'MAE':>9}  unit"]
    fmt = (lambda v: "-" if v is None else f"{v:.2f}")
    for name, err in cal.fit_error.items():
        mae = f"{err['mean_abs']:.3g} {err.get('mean_abs_unit', '')}" if "mean_abs" in err else "-"
        unit = str(err.get("unit", "")).split(" (")[0]
        lines.append(f"{name:30} {str(err.get('role', '')):14} {err.get('points', 0):>6} "
                     f"{fmt(err.get('mape_pct')):>10} {fmt(err.get('max_abs_pct')):>9} {mae:>9}  {unit}")
    lines.append("mean/max |err|: % of measured for times, percentage points for shares; for best_k the % of batch "
                 "sizes with another best k / the largest |k difference|")
    if points:
        for name, err in cal.fit_error.items():
            for series, e in (err.get("by_series") or {}).items():
                lines.append(f"  {name}: {series} MAPE {e['mape_pct']:.2f} % (max {e['max_abs_pct']:.2f} %, "
                             f"{e['points']} points)")
        for name, pts in result.sets.items():
            for m, pred in point_rows(cal, pts):
                lines.append(f"  {name}: B={m.batch} k={m.k} {m.metric} measured {m.value:.4g} predicted {pred:.4g}")
    return "\n".join(lines)


def terms_summary(result: BuildResult) -> str:
    return "serving terms: " + ", ".join(f"{n} {v:.4g}" for n, v in result.theta.items()
                                         if n in result.notes)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    command = "build-calibration " + " ".join(shlex.quote(a) for a in argv)
    published = None if args.published == "none" else args.published
    if published is not None and not Path(published).is_file():
        return _fail(f"--published {published}: no such file")
    if args.profile is not None and not Path(args.profile).is_file():
        return _fail(f"--profile {args.profile}: no such file")
    out = Path(args.out)
    if not out.parent.is_dir():
        return _fail(f"--out {out}: directory {out.parent} does not exist")
    for name in (args.target, args.proposer.split(":", 1)[1] if args.proposer.startswith("draft:") else None):
        note = resolve_name(name)[1] if name else None
        if note:
            print(f"build-calibration: {note}", file=sys.stderr)
    if args.from_bench is not None:
        return _from_bench(args, published, command, out)
    for option, given in (("--num-speculative-tokens", args.num_speculative_tokens is not None),
                          ("--bench-requests", args.bench_requests is not None),
                          ("--no-leave-one-out", args.no_leave_one_out)):
        if given:
            return _fail(f"{option} needs --from-bench")
    try:
        result = build_calibration(args.name, args.target, args.proposer, args.gpu, args.tp, args.vidur, published,
                                   args.profile, command, engine=args.engine)
        save_calibration(result.calibration, out)
    except BuildError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"--out {out}: {exc.strerror or exc}")
    print(f"{result.calibration.name}: {result.calibration.description}")
    print(terms_summary(result))
    print(error_table(result, args.points))
    print(f"wrote {out}")
    return 0


def _from_bench(args: argparse.Namespace, published: str | None, command: str, out: Path) -> int:
    """--from-bench: the serving terms refitted to vllm bench serve results (profiler/bench_build.py)."""
    from specdec_sim.profiler.bench_build import bench_report, build_from_bench  # loads the simulator

    if getattr(args, "engine", "v1") != "v1":
        return _fail(f"--from-bench with --engine {args.engine}: bench results are fitted as vLLM V1 runs (the "
                     "spec_decode_* counters of vllm bench serve are V1's); leave out --engine")
    requests = args.bench_requests
    if requests is not None and requests < 1:
        return _fail(f"--bench-requests {requests}: must be at least 1")
    try:
        build = build_from_bench(args.name, args.target, args.proposer, args.gpu, args.tp, args.from_bench,
                                 args.num_speculative_tokens, args.vidur, published, args.profile, command,
                                 requests, not args.no_leave_one_out,
                                 lambda text: print(f"build-calibration: {text}", file=sys.stderr, flush=True))
        save_calibration(build.result.calibration, out)
    except (BuildError, BenchError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"--out {out}: {exc.strerror or exc}")
    for run in build.runs:
        for note in run.notes:
            print(f"build-calibration: note: {run.path}: {note}", file=sys.stderr)
    errors = build.fit.errors_pct("fit")
    mape = float(abs(errors[np.isfinite(errors)]).mean()) if np.isfinite(errors).any() else float("inf")
    if mape > LARGE_FIT_ERROR_PCT:
        print(f"build-calibration: note: the fitted calibration still misses the runs by {mape:.1f} % on average: "
              f"were they served by {args.target} with {args.proposer} on {args.tp}x {args.gpu}?", file=sys.stderr)
    result = build.result
    print(f"{result.calibration.name}: {result.calibration.description}")
    print(terms_summary(result))
    print(error_table(result, args.points))
    print(bench_report(build))
    print(f"wrote {out}")
    return 0


def _fail(message: str) -> int:
    return fail("build-calibration", message)


if __name__ == "__main__":
    sys.exit(main())

"""`profile-gpu`: measure forward-pass latency of a target/draft pair, fit and save a calibration.

    profile-gpu --target llama3.1-8b --draft llama3.2-1b --device cuda --dtype bf16 \\
                --grid standard --out profiles/h100/
    profile-gpu --target tiny-llama --draft tiny-draft --device cpu --grid quick --out /tmp/p
    profile-gpu --replay steps.csv --target ... --draft ... --calibration cal.json

The output directory gets measurements.csv (appended point by point; rerun to resume; a row torn
by a kill is measured again), calibration.json (loadable with specdec_sim.costmodel.load_calibration;
written to a temporary name and renamed) and PNG plots. A held-out error above 10 % is a
`profile-gpu: warning:` line, also kept in the calibration's fit_error. Bad options and unreadable
inputs print one line and exit 2.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import specdec_sim
from specdec_sim.cli_support import OneLineParser, fail
from specdec_sim.profiler.models import add_device_options
from specdec_sim.safe_output import interrupt_exit_code, sigterm_as_interrupt
from specdec_sim.profiler.measure_grid import PRESETS, GridError, build_grid, grid_spec
from specdec_sim.costmodel.architectures import (ARCHITECTURES, DTYPE_BYTES, ArchitectureError, architecture,
                                                 resolve_name)



class UsageError(Exception):
    """An option the user can fix; printed as one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="profile-gpu", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--version", action="version", version=f"profile-gpu {specdec_sim.__version__}")
    m = p.add_argument_group("models")
    m.add_argument("--target", required=True,
                   help=f"target model: a registry name ({', '.join(ARCHITECTURES)}) or a directory with "
                        "config.json")
    m.add_argument("--draft", default=None, help="draft model (same choices); omit to profile the target only")
    m.add_argument("--load-weights", action="store_true",
                   help="load real weights when a model directory has them (default: random weights)")
    d = p.add_argument_group("device")
    add_device_options(d, DTYPE_BYTES)
    d.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    d.add_argument("--cpu-clock", default="wall", choices=["wall", "thread"],
                   help="CPU timer: wall = time.perf_counter; thread = time.thread_time, CPU time of the "
                        "timing thread, for shared machines where other processes steal cores (needs --threads 1)")
    g = p.add_argument_group("grid")
    g.add_argument("--grid", default="standard", choices=list(PRESETS), help="grid preset")
    g.add_argument("--batch-sizes", help="comma list of batch sizes (sequences), e.g. 1,4,16")
    g.add_argument("--query-tokens", help="comma list of new tokens per sequence: 1 = decode, k+1 = verify")
    g.add_argument("--context-lengths", help="comma list of KV-cache tokens per sequence, e.g. 128,512")
    g.add_argument("--prefill-chunks", help="comma list of prefill chunk sizes in tokens ('none' for none)")
    g.add_argument("--warmup", type=int, default=None, help="untimed forwards per point (default 2 cuda, 1 cpu)")
    g.add_argument("--repeats", type=int, default=None, help="timed forwards per point (default 10 cuda, 3 cpu)")
    g.add_argument("--passes", type=int, default=1,
                   help="measure the whole grid this many times, pass after pass, and fit the median over "
                        "passes (spreads load bursts of other jobs on a shared machine)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=None, help="output directory, created if missing (default profiles/<target>-<device>); with --replay, a "
                        "directory or a .csv file path")
    o.add_argument("--name", default=None, help="calibration name (default <target>-<draft>-<device>)")
    o.add_argument("--seed", type=int, default=0, help="seed for inputs and the held-out split")
    o.add_argument("--quiet", action="store_true", help="no per-point lines, only the progress bar and summary")
    r = p.add_argument_group("replay")
    r.add_argument("--replay", type=Path, default=None, help="simulator per-step CSV to execute on real models")
    r.add_argument("--calibration", default=None, help="calibration (path or shipped name) that predicts the steps")
    r.add_argument("--replay-max-steps", type=int, default=50, help="steps to execute (sampled evenly)")
    return p


def resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}); use --device cpu")
        return device
    if device != "cpu":
        raise UsageError(f"--device {device!r}: expected cuda, cuda:N, cpu or auto")
    return device


def _set_threads(args, device: str) -> None:
    import torch
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.cpu_clock == "thread" and device == "cpu" and torch.get_num_threads() != 1:
        raise UsageError("--cpu-clock thread times only the calling thread: add --threads 1")


def _check_models(args) -> None:
    for name in (args.target, args.draft):
        note = resolve_name(name)[1] if name else None
        if note:
            print(f"profile-gpu: {note}", file=sys.stderr)
    architecture(args.target)
    if args.draft:
        tv, dv = architecture(args.target).vocab, architecture(args.draft).vocab
        if tv != dv:
            print(f"profile-gpu: warning: draft vocabulary {dv} differs from target {tv}; "
                  "a real pair needs the same tokenizer", file=sys.stderr)


def prepare_out_dir(out: Path) -> Path:
    """Create --out (a directory) and make sure files can be written in it, before anything runs."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".profile-gpu-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return out


def _short(name: str) -> str:
    """The model's registry name (a directory's own name for a config.json directory)."""
    return architecture(name).name


def profile(args, argv: list[str]) -> int:
    """Measure the grid, fit, write calibration and plots."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from specdec_sim.profiler.measure_calibration import build_calibration, fit_summary
    from specdec_sim.profiler.measure import (MEASUREMENTS_CSV, MeasurementsError, ProfileMismatch, describe,
                                              done_keys, read_measurements, run_grid, stamp)
    from specdec_sim.profiler.models import build_model
    from specdec_sim.profiler.measure_plots import write_plots
    from specdec_sim.profiler.measure_timing import cpu_model, device_info, is_oom
    from specdec_sim.costmodel import save_calibration

    spec = grid_spec(args.grid, args.batch_sizes, args.query_tokens, args.context_lengths, args.prefill_chunks)
    device = resolve_device(args.device)
    dtype = args.dtype if args.dtype != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    gpu = device.startswith("cuda")
    warmup = args.warmup if args.warmup is not None else (2 if gpu else 1)
    repeats = args.repeats if args.repeats is not None else (10 if gpu else 3)
    if repeats < 1 or warmup < 0 or args.passes < 1:
        raise UsageError("--repeats and --passes must be >= 1 and --warmup >= 0")
    _set_threads(args, device)
    out = prepare_out_dir(args.out or Path("profiles") / f"{_short(args.target)}-{device.split(':')[0]}")
    console = Console(stderr=False, width=None if sys.stdout.isatty() else 160)
    info = device_info(device, dtype)
    roles = {"target": args.target, **({"draft": args.draft} if args.draft else {})}
    shapes = {role: architecture(name) for role, name in roles.items()}
    points = build_grid(spec, with_draft=bool(args.draft))
    csv_path = out / MEASUREMENTS_CSV
    try:  # before the models are built: a directory of other measurements is refused at once
        done_keys(read_measurements(csv_path, repair=True), {r: s.name for r, s in shapes.items()}, info.name, dtype)
    except (ProfileMismatch, MeasurementsError) as exc:
        raise UsageError(str(exc)) from None
    console.print(f"[bold]profile-gpu[/] {info.name} | {dtype} | torch {info.torch_version} cuda "
                  f"{info.cuda_version} transformers {info.transformers_version} | {len(points)} points -> {out}")
    try:
        models = {role: build_model(name, device, dtype, args.load_weights, args.seed) for role, name in roles.items()}
    except Exception as exc:  # weights that do not fit are a user-facing condition, anything else a bug
        if not is_oom(exc):
            raise
        print(f"profile-gpu: error: the models do not fit on {info.name} in {dtype}: "
              f"{str(exc).splitlines()[0][:160]}", file=sys.stderr)
        return 1
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("measuring", total=len(points) * args.passes)
            done_before = run_grid(
                points, models, shapes, info, dtype, csv_path, warmup, repeats, args.cpu_clock,
                on_row=lambda m: (bar.advance(task), None if args.quiet else bar.console.print(describe(m))),
                on_skip_done=lambda p: bar.advance(task), passes=args.passes)
    except (ProfileMismatch, MeasurementsError) as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt as exc:
        console.print(f"interrupted: finished points are in {csv_path}; rerun the same command to resume")
        return interrupt_exit_code(exc)
    console.print(f"measured {done_before} new points ({len(points) * args.passes - done_before} already in "
                  f"{csv_path})")
    rows = read_measurements(csv_path)
    name = args.name or "-".join([_short(args.target)] + ([_short(args.draft)] if args.draft else [])
                                 + [device.split(":")[0]])
    provenance = {"device": info.name, "device_memory_gib": info.memory_gib, "dtype": dtype,
                  "torch": info.torch_version, "cuda": info.cuda_version,
                  "transformers": info.transformers_version, "target_model": args.target,
                  "draft_model": args.draft, "weights": "real" if args.load_weights else "random",
                  "command": "profile-gpu " + shlex.join(argv), "grid": {"preset": args.grid, **spec.as_dict()},
                  "warmup": warmup, "repeats": repeats, "passes": args.passes, "measured_until": stamp(),
                  "timer": "cuda events" if gpu else f"{args.cpu_clock} clock, {torch.get_num_threads()} threads",
                  "peak_bandwidth_gbs": info.peak_bandwidth_gbs, "peak_tflops": info.peak_tflops,
                  "kv_cache": "transformers DynamicCache with preallocated layers written in place (no per-forward "
                              "copy); random keys/values of the context length, filled before timing",
                  **({} if gpu else {"cpu_model": cpu_model()})}
    try:
        cal = build_calibration(rows, name, shapes["target"], shapes.get("draft"), dtype, info.memory_gib,
                                provenance, seed=args.seed)
    except ValueError as exc:  # e.g. every target point was skipped
        print(f"profile-gpu: cannot fit a calibration: {exc} (measurements kept in {csv_path})", file=sys.stderr)
        return 1
    save_calibration(cal, out / "calibration.json")
    fits = {"target": cal.target, **({"draft": cal.draft.forward} if cal.draft.forward else {})}
    plots = write_plots(rows, fits, out)
    console.print(fit_summary(cal))
    console.print(f"wrote {csv_path}, {out / 'calibration.json'}, {', '.join(p.name for p in plots)}")
    if cal.fit_error.get("warning"):
        print(f"profile-gpu: warning: {cal.fit_error['warning']}", file=sys.stderr)
    return 0


def replay(args) -> int:
    from specdec_sim.costmodel import CalibrationError
    from specdec_sim.profiler.measure_replay import ReplayError, read_steps, run_replay
    if not args.replay.is_file():
        raise UsageError(f"--replay {args.replay}: file not found")
    try:
        read_steps(args.replay)  # a file that is not a step log is named before any model is built
    except ReplayError as exc:
        raise UsageError(str(exc)) from None
    if not args.draft:
        raise UsageError("--replay needs --draft (the draft model executes the k_max draft steps)")
    device = resolve_device(args.device)
    _set_threads(args, device)
    dtype = args.dtype if args.dtype != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    out = args.out or args.replay.with_name(args.replay.stem + "_replay.csv")
    out = prepare_out_dir(out.parent) / out.name if out.suffix == ".csv" else prepare_out_dir(out) / "replay.csv"
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory, not a CSV file")
    warmup = args.warmup if args.warmup is not None else 1
    repeats = args.repeats if args.repeats is not None else (5 if device.startswith("cuda") else 1)
    try:
        return run_replay(args.replay, args.target, args.draft, device, dtype, args.calibration, out,
                          args.replay_max_steps, warmup, repeats, args.load_weights, args.seed, args.cpu_clock)
    except (ReplayError, CalibrationError) as exc:
        raise UsageError(str(exc)) from None


def _check_numbers(args) -> None:
    """Counts that argparse reads as int but that must be positive (or >= 0)."""
    for option, value, low in (("--threads", args.threads, 1), ("--seed", args.seed, 0),
                               ("--replay-max-steps", args.replay_max_steps, 1)):
        if value is not None and value < low:
            raise UsageError(f"{option} must be >= {low}, not {value}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        _check_numbers(args)
        _check_models(args)
        grid_spec(args.grid, args.batch_sizes, args.query_tokens, args.context_lengths, args.prefill_chunks)
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError:
            raise UsageError("torch and transformers are needed: run pip install \".[profile]\" in the "
                             "specdec-sim checkout") from None
        with sigterm_as_interrupt():
            return replay(args) if args.replay else profile(args, argv)
    except (UsageError, ArchitectureError, GridError) as exc:
        return fail("profile-gpu", exc)
    except KeyboardInterrupt as exc:  # outside the measuring loop (which says where its points are)
        print("profile-gpu: interrupted", file=sys.stderr)
        return interrupt_exit_code(exc)


if __name__ == "__main__":
    raise SystemExit(main())

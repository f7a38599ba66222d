"""Where `simulate` spends its time, by stack sampling: a SIGPROF timer samples the running stack.

cProfile charges every function call, which distorts a loop of many small functions (the engine's
step loop) by more than the differences looked for; sampling costs nothing per call. Every
`--interval` seconds of CPU time the innermost frame's line is counted (self time) and every
function on the stack once (inclusive time). Linux and macOS (SIGPROF); the kernel's timer tick
bounds the real rate (4 ms at HZ=250), so take a run of several seconds.

    python benchmarks/stack_sample.py -- --trace azure-conv --policy fixed:3
    python benchmarks/stack_sample.py --top 60 -- --trace azure-conv --policy none --no-step-log

Everything after `--` is passed to `simulate` (with `--quiet`, and `--out` a temporary folder
unless given).
"""
from __future__ import annotations

import argparse
import collections
import signal
import sys
import tempfile
from pathlib import Path

from specdec_sim.simulator.cli import main as simulate


class StackSampler:
    """Counts, per SIGPROF tick, the innermost (file, line, function) and every (file, function) on the stack."""

    def __init__(self) -> None:
        self.samples = 0
        self.lines: collections.Counter = collections.Counter()
        self.functions: collections.Counter = collections.Counter()

    def __call__(self, signum, frame) -> None:
        self.samples += 1
        if frame is None:
            return
        self.lines[(Path(frame.f_code.co_filename).name, frame.f_lineno, frame.f_code.co_name)] += 1
        seen = set()
        while frame is not None:
            key = (Path(frame.f_code.co_filename).name, frame.f_code.co_name)
            if key not in seen:
                seen.add(key)
                self.functions[key] += 1
            frame = frame.f_back

    def report(self, top: int) -> str:
        n = max(self.samples, 1)
        out = [f"{self.samples} samples", "--- inclusive, by function"]
        out += [f"{100 * c / n:6.1f} %  {f}:{name}" for (f, name), c in self.functions.most_common(top)]
        out.append("--- self, by line")
        out += [f"{100 * c / n:6.1f} %  {f}:{line} {name}" for (f, line, name), c in self.lines.most_common(top)]
        return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, simulate_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interval", type=float, default=0.001, help="seconds of CPU time between samples")
    parser.add_argument("--top", type=int, default=40, help="rows per table")
    args = parser.parse_args(ours)
    if not args.interval > 0 or args.top < 1:
        parser.error("--interval must be > 0 and --top >= 1")
    sampler = StackSampler()
    with tempfile.TemporaryDirectory() as tmp:
        if "--out" not in simulate_args:
            simulate_args = [*simulate_args, "--out", tmp]
        previous = signal.signal(signal.SIGPROF, sampler)
        signal.setitimer(signal.ITIMER_PROF, args.interval, args.interval)
        try:
            code = simulate([*simulate_args, "--quiet"])
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            signal.signal(signal.SIGPROF, previous)
    print(sampler.report(args.top))
    return code


if __name__ == "__main__":
    sys.exit(main())

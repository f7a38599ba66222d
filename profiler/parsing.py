"""The argument parser the profiler's commands share (a bad option is one line on stderr and exit 2), and the
options that say where a model runs."""
from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """`PROG: error: MESSAGE (see PROG --help)` instead of usage + message; exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def add_device_options(group, dtypes) -> None:
    """--device and --dtype, the same for every command that runs a model (`dtypes`: the dtype names it knows)."""
    group.add_argument("--device", default="auto", help="cuda, cuda:N, cpu, or auto (cuda if available)")
    group.add_argument("--dtype", default="auto", choices=["auto", *dtypes],
                       help="weights/activations dtype; auto = bf16 on cuda, fp32 on cpu")

"""The argument parser the profiler's commands share: a bad option is one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """`PROG: error: MESSAGE (see PROG --help)` instead of usage + message; exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

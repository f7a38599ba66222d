"""What every command shares for bad input: a parser whose errors are one line, and the one-line error itself.

`OneLineParser` reports a bad option as `PROG: error: MESSAGE (see PROG --help)` on stderr and exits
with status 2, instead of argparse's usage block; with `error_type` it raises that exception with
the message instead, for commands that print their errors themselves. `fail` prints any other
error of a command the same way and returns the exit status. Standard library only: every package
may import it.
"""
from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


def one_line(message: object) -> str:
    """`message` on one line (runs of whitespace, newlines included, become one space)."""
    return " ".join(str(message).split())


def fail(prog: str, message: object, code: int = EXIT_USAGE) -> int:
    """Print `PROG: error: MESSAGE` (one line) on stderr and return `code`."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    return code


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line; `error_type` makes them an exception instead of an exit."""

    def __init__(self, *args, error_type: type[Exception] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.error_type = error_type

    def error(self, message: str) -> None:  # type: ignore[override]
        text = f"{one_line(message)} (see {self.prog} --help)"
        if self.error_type is not None:
            raise self.error_type(text)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {text}\n")


__all__ = ["EXIT_USAGE", "OneLineParser", "fail", "one_line"]

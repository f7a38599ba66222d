"""Output that survives interrupts, for every command: files written whole, SIGTERM handled like Ctrl-C.

* `write_atomic(path, writer)`: `writer` fills a temporary file beside `path`, which is then renamed
  into place, with SIGINT/SIGTERM deferred meanwhile; readers (and `--resume`) see the old file or
  the new one, never half of one. `write_text_atomic(path, text)` writes a string that way.
* `signals_deferred()`: inside, SIGINT/SIGTERM are only recorded and acted on at the end (around
  file writes, and imports of C extensions, where a signal surfaces as an unrelated error).
* `sigterm_as_interrupt()`: inside, SIGTERM raises `Terminated`, a KeyboardInterrupt, so code that
  cleans up after Ctrl-C cleans up after SIGTERM too; `interrupt_exit_code(exc)` is 130 or 143.

Standard library only: a sweep worker imports this before it ignores SIGINT and must stay free of pandas.
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same cleanup runs; the command exits 128 + `signum`."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum


def interrupt_exit_code(exc: BaseException) -> int:
    """128 + the signal number: 143 for SIGTERM (`Terminated`), 130 for Ctrl-C."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def sigterm_as_interrupt(ctrl_c: bool = False) -> Iterator[None]:
    """Inside, SIGTERM raises `Terminated`; with `ctrl_c`, SIGINT raises KeyboardInterrupt even if the
    process started with it ignored (a background job). The previous handlers are restored after.
    Outside the main thread (where handlers cannot be set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = (signal.SIGINT, signal.SIGTERM) if ctrl_c else (signal.SIGTERM,)
    previous = {signum: signal.getsignal(signum) for signum in signums}
    if ctrl_c:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def signals_deferred(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Inside, SIGINT/SIGTERM are only recorded; on exit the previous handlers are restored and the
    first recorded signal is handed to its handler (which raises KeyboardInterrupt, `Terminated`, ...).

    A handler that raises can otherwise land inside a C extension's first import, e.g. pandas importing
    pyarrow in `to_parquet`, leaving that module half-initialised so the next write fails with an
    unrelated error. Masking the signal (`pthread_sigmask`) is not enough once other threads exist: the
    kernel hands the signal to one of them and Python still runs the handler in the main thread.
    Handlers can be swapped only in the main thread; elsewhere this does nothing (Python runs signal
    handlers in the main thread only).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: pending.append(signum)) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if pending:
            _deliver(pending[0], previous[pending[0]])


def _deliver(signum: int, handler: Any) -> None:
    """Act on a deferred signal as its handler would have."""
    if callable(handler):
        handler(signum, None)
    elif handler != signal.SIG_IGN:  # SIG_DFL (or unknown): let the default action happen
        signal.raise_signal(signum)


def write_atomic(path: str | os.PathLike, writer: Callable[[str], Any]) -> None:
    """Write `path` through `writer(temporary path in the same directory)`, then rename it into place.

    Readers (and `--resume`) never see half a file: an interrupted or failed write leaves the old file
    or none, and no temporary file. SIGINT/SIGTERM are deferred while the file is written and renamed,
    and acted on right after. The file gets the mode `open()` would give it.
    """
    path = Path(path)
    with signals_deferred():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            writer(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """`write_atomic` of a string (UTF-8)."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = ["Terminated", "interrupt_exit_code", "sigterm_as_interrupt", "signals_deferred", "write_atomic",
           "write_text_atomic"]

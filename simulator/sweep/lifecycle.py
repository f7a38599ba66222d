"""Sweep worker lifecycle: workers die with their parent.

* `worker_init(parent_pid)` runs first in every local worker process. Workers ignore SIGINT (the
  parent handles Ctrl-C), ask Linux to SIGKILL them when the parent dies (`prctl(PR_SET_PDEATHSIG)`
  through ctypes), and on every platform start a daemon thread that exits the worker as soon as its
  parent pid changes (the parent died and the worker was re-parented). So neither SIGTERM nor
  SIGKILL of `sweep` leaves workers running, holding its output pipe.
* `terminate_workers(pool)` kills a process pool's workers now (an interrupted sweep does not wait
  for the runs in flight; they are rerun on resume).

SIGTERM raises `specdec_sim.safe_output.Terminated` in the parent, as Ctrl-C raises
KeyboardInterrupt, and file writes defer both (`safe_output.signals_deferred`). This module loads
first in every worker, before it ignores SIGINT, so it imports nothing that loads pandas.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_INTERVAL_S = 0.5


def _set_pdeathsig() -> None:
    """Linux: the kernel sends SIGKILL to this process when its parent (thread) exits."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no libc prctl: the watchdog thread still covers it
        pass


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(WATCHDOG_INTERVAL_S)


def worker_init(parent_pid: int) -> None:
    """Initializer of every local sweep worker (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_pdeathsig()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="sweep-parent-watchdog",
                     daemon=True).start()


def terminate_workers(pool: Any) -> None:
    """Kill the worker processes of a ProcessPoolExecutor (its private `_processes` map)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.kill()
        except (OSError, ValueError, AttributeError):
            pass

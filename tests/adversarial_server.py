"""The fork server of the adversarial CLI cases (tests/adversarial_cases.py): run as a script by `run_cases`.

It imports the CLIs once and forks a child per case: stdin from /dev/null, stdout/stderr to files, a
memory cap, and a wall-clock limit it enforces (SIGKILL; reported as `timed_out`). The child calls the
command's `main(argv)` as its console script does; an exception escaping `main` prints a traceback exactly
as the console script would. One JSON line per finished case goes to stdout.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Imported once in the server so that forked children do not pay for them (the CLIs import lazily).
WARM_MODULES = ("specdec_sim.simulator.engine", "specdec_sim.simulator.report", "specdec_sim.simulator.sweep.runner",
                "specdec_sim.simulator.sweep.capacity", "specdec_sim.simulator.sweep.plots", "matplotlib.pyplot",
                "pyarrow.parquet", "pyarrow.csv", "rich.console", "rich.progress", "scipy.optimize")
WARM_PROFILER = ("torch", "transformers", "specdec_sim.profiler.measure", "specdec_sim.profiler.models",
                 "specdec_sim.profiler.measure_fit", "specdec_sim.profiler.measure_plots")


def _warm(modules: tuple[str, ...]) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module that moved or is missing only costs time
            pass


def _mains() -> dict[str, Any]:
    from specdec_sim.profiler.measure_cli import main as profile_main
    from specdec_sim.simulator.cli import main as simulate_main
    from specdec_sim.simulator.sweep.cli import main as sweep_main

    return {"simulate": simulate_main, "sweep": sweep_main, "profile-gpu": profile_main}


def _child(case: dict, folder: Path, mains: dict[str, Any], memory_cap: int) -> None:
    """In the forked child: isolate, run main(argv) as the console script would, exit with its code."""
    import resource
    import signal
    import traceback

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
    resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        handle = os.open(folder / f"_{name}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
    os.chdir(folder)
    argv = [a.replace("{tmp}", str(folder)) for a in case["argv"]]
    sys.argv = [case["prog"], *argv]
    rc = 1
    try:
        code = mains[case["prog"]](argv)
        rc = code if isinstance(code, int) else (0 if code is None else 1)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the console script would print
        traceback.print_exc()
        rc = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(rc & 0xFF)


def _read(path: Path, limit: int = 20_000) -> str:
    try:
        return path.read_bytes()[:limit].decode("utf-8", "replace")
    except OSError:
        return ""


def serve(request: dict) -> None:
    import signal

    os.environ.setdefault("MPLBACKEND", "Agg")
    mains = _mains()
    _warm(WARM_MODULES)
    if any(c["prog"] == "profile-gpu" for c in request["cases"]):
        _warm(WARM_PROFILER)
    pending = list(request["cases"])
    running: dict[int, tuple[dict, float]] = {}
    workdir = Path(request["workdir"])
    while pending or running:
        while pending and len(running) < request["jobs"]:
            case = pending.pop(0)
            folder = workdir / case["id"]
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(case, folder, mains, request["memory_cap"])
            running[pid] = (case, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.monotonic()
            for rpid, (case, started) in list(running.items()):
                if now - started > request["timeout_s"]:
                    os.kill(rpid, signal.SIGKILL)
                    os.waitpid(rpid, 0)
                    _report(case, workdir, -9, now - started, timed_out=True)
                    del running[rpid]
            time.sleep(0.01)
            continue
        if pid not in running:
            continue  # a grandchild re-parented to us, not a case
        case, started = running.pop(pid)
        rc = os.waitstatus_to_exitcode(status)
        _report(case, workdir, rc, time.monotonic() - started, timed_out=False)


def _report(case: dict, workdir: Path, rc: int, wall: float, timed_out: bool) -> None:
    folder = workdir / case["id"]
    print(json.dumps({"id": case["id"], "rc": rc, "stdout": _read(folder / "_stdout.txt"),
                      "stderr": _read(folder / "_stderr.txt"), "wall_s": round(wall, 3),
                      "timed_out": timed_out, "workdir": str(folder)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve(json.loads(sys.stdin.read()))

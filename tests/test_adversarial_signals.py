"""Adversarial campaign (issue 12), signals: SIGINT, SIGTERM and SIGKILL at seeded moments.

`simulate` (three policies, --out), `sweep` (--workers 2, --out) and `profile-gpu` (tiny CPU
models, quick grid) are started in their own session and signalled a seeded delay after they are
ready (the command's module is imported; for `profile-gpu`, the first measurement is on disk).
SIGINT goes to the process group, as Ctrl-C in a terminal sends it; SIGTERM and SIGKILL go to the
command's process only, as `kill PID` and the OOM killer send them. Then:

- INT/TERM: exit 130/143 (0 if it finished first, or killed by the signal if it landed after the
  work was complete, during interpreter shutdown) and no traceback on stderr; KILL: killed (or 0);
- no process of the session outlives the command by more than a grace period (workers die with it);
- every output file that is not a temporary name is complete: JSON parses, CSV row counts agree
  with the summary/Parquet, Parquet reads with rows, measurements.csv rows have every column (a torn
  last line only if resuming the same command completes and repairs it); after SIGKILL,
  `simulate --resume` completes the run from what was left.

The test kills its whole session at the end, so it never leaves processes behind itself.
"""
from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest

READY_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 60.0
ORPHAN_GRACE_S = 10.0
# Imports the command's module, marks readiness, then runs main() as the console script does.
LAUNCHER = ("import importlib, os, sys; m = importlib.import_module(sys.argv[1]); "
            "open(os.environ['ADV_READY'], 'w').close(); sys.argv = sys.argv[2:]; sys.exit(m.main())")
MODULES = {"simulate": "specdec_sim.simulator.cli", "sweep": "specdec_sim.simulator.sweep.cli",
           "profile-gpu": "specdec_sim.profiler.measure_cli"}
EXPECTED_RC = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}


@dataclass
class Outcome:
    rc: int | None
    stderr: str
    survivors: list[str]


def _argv(prog: str, out: Path) -> list[str]:
    if prog == "simulate":
        return ["--trace", "sharegpt", "--max-requests", "400", "--policy", "none", "--policy", "fixed:3",
                "--policy", "smartspec", "--quiet", "--out", str(out)]
    if prog == "sweep":
        return ["--trace", "sharegpt", "--policies", "none;fixed:3;smartspec", "--rates", "2,4", "--max-requests",
                "100", "--workers", "2", "--no-progress", "--out", str(out)]
    return ["--target", "tiny-llama", "--draft", "tiny-draft", "--device", "cpu", "--grid", "quick", "--quiet",
            "--out", str(out)]


def _session_processes(sid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of session `sid`."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid} ppid {proc.ppid()} {' '.join(proc.cmdline())[:160]}"
    except psutil.Error:
        return f"pid {proc.pid}"


def _wait_ready(proc: subprocess.Popen, prog: str, ready: Path, out: Path) -> None:
    """Until the command is ready to be interrupted (or has already exited)."""
    marker = out / "measurements.csv" if prog == "profile-gpu" else ready
    deadline = time.monotonic() + READY_TIMEOUT_S + (60 if prog == "profile-gpu" else 0)
    while time.monotonic() < deadline and proc.poll() is None:
        if marker.exists() and marker.stat().st_size > 0 or (marker == ready and ready.exists()):
            return
        time.sleep(0.02)


def run_and_signal(prog: str, sig: signal.Signals, delay_s: float, tmp: Path, argv: list[str] | None = None) -> Outcome:
    out = tmp / "out"
    ready = tmp / "ready"
    env = {**os.environ, "ADV_READY": str(ready), "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    err_path = tmp / "stderr.txt"
    with open(tmp / "stdout.txt", "wb") as so, open(err_path, "wb") as se:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, MODULES[prog], prog, *(argv or _argv(prog, out))],
                                cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=so, stderr=se,
                                start_new_session=True)
    sid = proc.pid
    try:
        _wait_ready(proc, prog, ready, out)
        time.sleep(delay_s)
        try:  # children that left the session (setsid) are still caught by this snapshot
            snapshot = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            snapshot = []
        if proc.poll() is None:
            if sig == signal.SIGINT:
                os.killpg(sid, sig)
            else:
                os.kill(proc.pid, sig)
        try:
            rc = proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            rc = None
        left = {p.pid: p for p in [*snapshot, *_session_processes(sid)]}.values()
        _, alive = psutil.wait_procs(list(left), timeout=ORPHAN_GRACE_S)
        survivors = [_describe(p) for p in alive if _alive(p)]
    finally:
        try:
            os.killpg(sid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for child in snapshot:
            try:
                child.kill()
            except psutil.Error:
                pass
        proc.wait(timeout=30)
    return Outcome(rc, err_path.read_text(errors="replace"), survivors)


# --- is every file in --out complete? ---------------------------------------------------------------

def _temporary(path: Path) -> bool:
    """A name no reader takes for a result: a hidden file or a temporary suffix."""
    return path.name.startswith(".") or any(part in path.name for part in (".tmp", ".part", "~", ".partial"))


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows, f"{path}: empty CSV"
    return rows[0], rows[1:]


def check_simulate_out(out: Path) -> list[str]:
    problems = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and not _temporary(p)):
        rel = path.relative_to(out)
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".parquet":
                if pq.read_table(path).num_rows == 0:
                    problems.append(f"{rel}: 0 rows")
            elif path.suffix == ".csv":
                if pd.read_csv(path).shape[0] == 0:
                    problems.append(f"{rel}: 0 rows")
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the finding
            problems.append(f"{rel}: unreadable ({type(exc).__name__}: {str(exc)[:120]})")
    for summary in sorted(out.rglob("summary.json")):
        folder = summary.parent
        try:
            data = json.loads(summary.read_text())
        except ValueError:
            continue
        missing = [n for n in ("requests.csv", "steps.parquet") if not (folder / n).exists()]
        if missing:
            problems.append(f"{folder.name}: summary.json present (finished) but {', '.join(missing)} missing")
            continue
        count = data.get("num_prompts") or ((data.get("completed") or 0) + (data.get("failed") or 0)) or None
        try:
            rows = pd.read_csv(folder / "requests.csv").shape[0]
        except Exception:  # noqa: BLE001 - reported above
            continue
        if count is not None and rows != count:
            problems.append(f"{folder.name}/requests.csv: {rows} rows, summary.json says {count} requests")
    return problems


def check_sweep_out(out: Path) -> list[str]:
    problems = []
    tables = {}
    for name in ("results.parquet", "results.csv"):
        path = out / name
        if not path.exists():
            continue
        try:
            tables[name] = pq.read_table(path).num_rows if name.endswith("parquet") else pd.read_csv(path).shape[0]
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: unreadable ({type(exc).__name__}: {str(exc)[:120]})")
    if len(set(tables.values())) > 1:
        problems.append(f"results.parquet and results.csv disagree on rows: {tables}")
    for path in sorted(p for p in out.rglob("*") if p.is_file() and not _temporary(p) and p.suffix == ".png"):
        if path.stat().st_size == 0:
            problems.append(f"{path.name}: empty")
    return problems


def journal_torn(out: Path) -> bool:
    """Does runs.jsonl end in a line that is not a complete JSON object?"""
    path = out / "runs.jsonl"
    if not path.exists() or not path.read_text():
        return False
    last = path.read_text().splitlines()[-1]
    try:
        json.loads(last)
        return not path.read_text().endswith("\n")
    except ValueError:
        return True


def check_measurements(out: Path) -> tuple[list[str], bool]:
    """(problems, torn): rows short of the header's column count; a short last row is `torn`."""
    path = out / "measurements.csv"
    if not path.exists():
        return [], False
    try:
        header, rows = _csv_rows(path)
    except (AssertionError, csv.Error, UnicodeDecodeError) as exc:
        return [f"measurements.csv: unreadable ({exc})"], False
    short = [i for i, row in enumerate(rows) if len(row) != len(header)]
    torn = bool(short) and short == [len(rows) - 1] or not path.read_text().endswith("\n") and bool(rows)
    problems = [f"measurements.csv: row {i + 2} has {len(rows[i])} of {len(header)} columns"
                for i in short if i != len(rows) - 1]
    return problems, torn


# --- the cases --------------------------------------------------------------------------------------

def _delays(prog: str, sig: signal.Signals, count: int, lo: float, hi: float) -> list[float]:
    rng = random.Random(f"{prog}-{sig.name}")
    return [round(rng.uniform(lo, hi), 3) for _ in range(count)]


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
SIM_CASES = [(s, d) for s in SIGNALS for d in _delays("simulate", s, 3, 0.05, 1.8)]
SWEEP_CASES = [(s, d) for s in SIGNALS for d in _delays("sweep", s, 2, 0.2, 3.0)]
PROFILE_CASES = [(s, d) for s in SIGNALS for d in _delays("profile-gpu", s, 1, 0.0, 1.5)]


def finished(prog: str, tmp: Path) -> bool:
    """Did the command complete its work (final file written, closing line printed)? A signal that
    lands after that, while CPython shuts down (it resets its handlers to the default first), kills
    the process with the signal's default action: no command can avoid that window."""
    out, stdout = tmp / "out", (tmp / "stdout.txt").read_text(errors="replace")
    if prog == "simulate":
        return (out / "comparison.csv").exists()
    if prog == "sweep":
        return re.search(r"sweep: \d+ rows", stdout) is not None
    return (out / "calibration.json").exists() and "wrote " in stdout


def _assert_exit(outcome: Outcome, sig: signal.Signals, what: str, done: bool) -> None:
    assert outcome.rc is not None, f"{what}: still running {EXIT_TIMEOUT_S:.0f} s after {sig.name} (hang)"
    allowed = (EXPECTED_RC[sig], 0, -sig) if done else (EXPECTED_RC[sig], 0)
    assert outcome.rc in allowed, (f"{what}: exit {outcome.rc} after {sig.name} (work finished: {done}); "
                                   f"stderr: {outcome.stderr[-800:]!r}")
    if sig != signal.SIGKILL:
        assert "Traceback" not in outcome.stderr, f"{what}: traceback after {sig.name}: {outcome.stderr[-1500:]}"
    assert not outcome.survivors, f"{what}: processes outlived it after {sig.name}: {outcome.survivors}"


@pytest.mark.parametrize("sig,delay", SIM_CASES, ids=[f"{s.name}-{d}s" for s, d in SIM_CASES])
def test_simulate_interrupted(tmp_path, sig, delay):
    outcome = run_and_signal("simulate", sig, delay, tmp_path)
    _assert_exit(outcome, sig, f"simulate ({sig.name} at +{delay} s)", finished("simulate", tmp_path))
    out = tmp_path / "out"
    problems = check_simulate_out(out)
    assert not problems, f"simulate ({sig.name} at +{delay} s) left: {problems}"
    if sig == signal.SIGKILL and outcome.rc != 0:  # what a kill left must resume into a complete run
        rerun = subprocess.run([sys.executable, "-m", MODULES["simulate"], *_argv("simulate", out), "--resume"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, (
            f"--resume after SIGKILL at +{delay} s: exit {rerun.returncode}: {rerun.stderr[-1500:]}")
        assert not check_simulate_out(out)
        assert sorted(p.parent.name for p in out.glob("*/summary.json")) == ["fixed_3", "none", "smartspec"]
        assert pd.read_csv(out / "comparison.csv").shape[0] == 3


@pytest.mark.parametrize("sig,delay", SWEEP_CASES, ids=[f"{s.name}-{d}s" for s, d in SWEEP_CASES])
def test_sweep_interrupted(tmp_path, sig, delay):
    outcome = run_and_signal("sweep", sig, delay, tmp_path)
    _assert_exit(outcome, sig, f"sweep ({sig.name} at +{delay} s)", finished("sweep", tmp_path))
    out = tmp_path / "out"
    problems = check_sweep_out(out)
    assert not problems, f"sweep ({sig.name} at +{delay} s) left: {problems}"
    if journal_torn(out):  # tolerated only if the resume reads past it
        rerun = subprocess.run([sys.executable, "-m", MODULES["sweep"], *_argv("sweep", out)], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120, env={**os.environ, "MPLBACKEND": "Agg"})
        assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, f"resume after torn journal: {rerun.stderr[-1500:]}"
        assert not check_sweep_out(out)


@pytest.mark.parametrize("sig,delay", PROFILE_CASES, ids=[f"{s.name}-{d}s" for s, d in PROFILE_CASES])
def test_profile_gpu_interrupted(tmp_path, sig, delay):
    outcome = run_and_signal("profile-gpu", sig, delay, tmp_path)
    _assert_exit(outcome, sig, f"profile-gpu ({sig.name} at +{delay} s)", finished("profile-gpu", tmp_path))
    out = tmp_path / "out"
    problems, torn = check_measurements(out)
    for name in ("calibration.json",):
        if (out / name).exists():
            try:
                json.loads((out / name).read_text())
            except ValueError as exc:
                problems.append(f"{name}: does not parse ({exc})")
    assert not problems, f"profile-gpu ({sig.name} at +{delay} s) left: {problems}"
    if torn:  # a torn last row is tolerated only if resuming the same command completes past it
        rerun = subprocess.run([sys.executable, "-m", MODULES["profile-gpu"], *_argv("profile-gpu", out)],
                               cwd=tmp_path, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "MPLBACKEND": "Agg"})
        assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, (
            f"resume after {sig.name} (torn last row: {torn}): exit {rerun.returncode}: {rerun.stderr[-1500:]}")
        problems, torn = check_measurements(out)
        assert not problems and not torn, f"after resume: {problems}, torn={torn}"
        json.loads((out / "calibration.json").read_text())


def test_the_checks_catch_half_written_files(tmp_path):
    """The file checks above are not vacuous: each kind of torn output is reported."""
    sim = tmp_path / "sim" / "none"
    sim.mkdir(parents=True)
    (sim / "summary.json").write_text('{"num_prompts": 3, "completed": 3}')
    (sim / "requests.csv").write_text("request_id,e2el_ms\n0,1.0\n1,2.0\n")  # 2 rows, summary says 3
    pd.DataFrame({"step": pd.Series([], dtype="int64")}).to_parquet(sim / "steps.parquet")
    (tmp_path / "sim" / "comparison.csv").write_bytes(b"")
    (tmp_path / "sim" / "config.json").write_text('{"config": {')
    (tmp_path / "sim" / ".config.json.tmp").write_text("{")  # a temporary name is fine
    problems = " | ".join(check_simulate_out(tmp_path / "sim"))
    for text in ("steps.parquet: 0 rows", "comparison.csv: unreadable", "config.json: unreadable",
                 "requests.csv: 2 rows"):
        assert text in problems, problems
    assert ".config.json.tmp" not in problems
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    pd.DataFrame({"run_id": ["a", "b"]}).to_parquet(sweep / "results.parquet")
    (sweep / "results.csv").write_text("run_id\na\n")
    (sweep / "runs.jsonl").write_text('{"run_id": "a"}\n{"run_id": "b", "sta')
    assert check_sweep_out(sweep) and journal_torn(sweep)
    prof = tmp_path / "prof"
    prof.mkdir()
    (prof / "measurements.csv").write_text("a,b,c\n1,2,3\n4,5\n6,7,8\n9,")
    problems, torn = check_measurements(prof)
    assert problems == ["measurements.csv: row 3 has 2 of 3 columns"] and torn

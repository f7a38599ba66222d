"""`simulate`'s inputs: checked before anything runs, one line each, nothing silently ignored; signals, --resume.

Most cases call `main` in-process (fast); the signal tests run `simulate` as a subprocess with a
plugin policy that sleeps in every step, so the signal always lands while a policy is running:
the test waits (bounded) for the first policy's summary.json, then signals.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

import specdec_sim
from specdec_sim.simulator import cli
from specdec_sim.simulator.cli import main
from specdec_sim.simulator.config import MAX_CLOCK_S, ConfigError, SimConfig
from specdec_sim.simulator.engine import run_simulation
from specdec_sim.simulator.options import flag_of, option_fields
from specdec_sim.simulator.traffic import TrafficSpec, load_traffic
from specdec_sim.traces import synthetic_trace

SIMULATE = [sys.executable, "-m", "specdec_sim.simulator.cli"]
BASE = ["--trace", "sharegpt", "--max-requests", "5", "--quiet", "--policy", "none"]
SLOW_POLICY = '''
import os, time

class Slow:
    """fixed:2 that sleeps SLOW_POLICY_SLEEP seconds per step: a run that lasts while a test signals it."""
    name = "slow"

    def __init__(self, k=2):
        self.k = k

    def propose(self, batch):
        time.sleep(float(os.environ.get("SLOW_POLICY_SLEEP", "0")))
        return [min(self.k, batch.max_k)] * len(batch.requests)

    def observe(self, outcome):
        pass

    def estimated_alpha(self):
        return None
'''


def run_main(args: list[str], capsys) -> tuple[int, str]:
    """main's exit code (argparse's SystemExit included) and its stderr."""
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def one_line_error(code: int, err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


# ---- 1. output paths are checked before anything runs -------------------------------------------------
def test_out_that_is_a_file_is_one_line_before_any_policy_runs(tmp_path: Path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("not a directory\n")
    one_line_error(*run_main([*BASE, "--out", str(target)], capsys), "is a file")
    one_line_error(*run_main([*BASE, "--out", str(target / "sub")], capsys), "cannot write there")
    assert target.read_text() == "not a directory\n"


def test_policy_directory_blocked_by_a_file_is_refused_before_the_first_policy(tmp_path: Path, capsys):
    (tmp_path / "fixed_3").write_text("in the way")
    code, err = run_main([*BASE, "--policy", "fixed:3", "--out", str(tmp_path)], capsys)
    one_line_error(code, err, "fixed_3")
    assert not (tmp_path / "none").exists() and not (tmp_path / "config.json").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_out_is_one_line(tmp_path: Path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    one_line_error(*run_main([*BASE, "--out", str(locked / "run")], capsys), "cannot write there")


def test_out_error_from_a_real_process_has_no_traceback(tmp_path: Path):
    target = tmp_path / "file"
    target.write_text("")
    proc = subprocess.run([*SIMULATE, *BASE, "--out", str(target)], capture_output=True, text=True, timeout=120)
    one_line_error(proc.returncode, proc.stderr, "--out")


# ---- 2. interrupts and --resume ---------------------------------------------------------------------
def slow_args(out: Path) -> list[str]:
    return ["--trace", "sharegpt", "--max-requests", "30", "--policy", "none", "--policy", "slowpol:Slow",
            "--policy", "fixed:3", "--out", str(out), "--quiet"]


def wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"simulate exited ({proc.returncode}) before {path.name}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.02)


def assert_nothing_half_written(out: Path) -> None:
    """Every file under `out` is complete: no temporary files, and every output parses."""
    for path in out.rglob("*"):
        assert not path.name.endswith(".tmp") and not path.name.startswith("."), path
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            assert len(pd.read_csv(path)) > 0
        elif path.suffix == ".parquet":
            assert len(pd.read_parquet(path)) > 0


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_says_what_finished_and_resume_runs_the_rest(tmp_path: Path, monkeypatch, capsys, sig, code):
    (tmp_path / "slowpol.py").write_text(SLOW_POLICY)
    out = tmp_path / "run"
    env = {**os.environ, "SLOW_POLICY_SLEEP": "0.05",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([*SIMULATE, *slow_args(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(out / "none" / "summary.json", proc)
        proc.send_signal(sig)  # the slow policy sleeps 0.05 s in each of its ~1,000 steps: it is running now
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code
    assert stderr.strip().splitlines()[-1] == "simulate: interrupted after none; rerun with --resume to skip them"
    assert "Traceback" not in stderr
    assert_nothing_half_written(out)
    assert not (out / "slowpol_Slow" / "summary.json").exists() and not (out / "comparison.csv").exists()
    first = (out / "none" / "summary.json").stat().st_mtime_ns

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("SLOW_POLICY_SLEEP", raising=False)
    assert main([*slow_args(out), "--resume"]) == 0
    assert (out / "none" / "summary.json").stat().st_mtime_ns == first  # skipped, not rerun
    assert_nothing_half_written(out)
    resumed = pd.read_csv(out / "comparison.csv")
    assert list(resumed["policy_spec"]) == ["none", "slowpol:Slow", "fixed:3"]

    assert main(slow_args(tmp_path / "fresh")) == 0  # same options, never interrupted: the same table
    fresh = pd.read_csv(tmp_path / "fresh" / "comparison.csv")
    metrics = ["completed", "failed", "mean_e2el_ms", "p99_ttft_ms", "mean_itl_ms", "speedup_vs_none"]
    pd.testing.assert_frame_equal(resumed[metrics], fresh[metrics])
    capsys.readouterr()


@pytest.mark.parametrize("delay_s", [0.0, 0.4, 1.1])
def test_sigterm_at_any_moment_leaves_only_complete_files(tmp_path: Path, delay_s):
    """Whatever the process is doing when SIGTERM lands (simulating, writing, printing), every visible file is whole
    and the message names exactly the policies whose results are complete."""
    out = tmp_path / "run"
    args = ["--trace", "sharegpt", "--max-requests", "120", "--policy", "none", "--policy", "fixed:3", "--policy",
            "smartspec", "--out", str(out), "--quiet"]
    proc = subprocess.Popen([*SIMULATE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(out / "config.json", proc)  # written after the handlers are installed
        time.sleep(delay_s)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "Traceback" not in stderr, stderr
    if proc.returncode == -signal.SIGTERM:  # landed after main returned, its handler already restored: run complete
        assert (out / "comparison.csv").is_file()
    else:
        assert proc.returncode in (0, 143), (proc.returncode, stderr)
    for path in out.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".csv":
                assert len(pd.read_csv(path)) > 0
            elif path.suffix == ".parquet":
                assert len(pd.read_parquet(path)) > 0
    if proc.returncode == 143:
        from specdec_sim.simulator.report import finished_policies

        finished = sorted(spec for spec in ("none", "fixed:3", "smartspec")
                          if cli.policy_slug(spec) in finished_policies(out))
        expected = (f"simulate: interrupted after {', '.join(finished)}; rerun with --resume to skip them"
                    if finished else f"simulate: interrupted before any policy finished; nothing complete in {out}")
        assert stderr.strip().splitlines()[-1] == expected


def test_resume_refuses_results_made_with_other_options(tmp_path: Path, capsys):
    args = [*BASE, "--out", str(tmp_path)]
    assert main(args) == 0
    one_line_error(*run_main([*args, "--resume", "--seed", "1"], capsys), "different seed")
    one_line_error(*run_main([*args, "--resume", "--max-k", "4"], capsys), "different config")
    one_line_error(*run_main([*BASE, "--resume"], capsys), "--out")


def test_resume_reruns_a_stale_policy_directory_left_by_an_earlier_run(tmp_path: Path, capsys):
    both = [*BASE, "--policy", "fixed:2", "--out", str(tmp_path)]
    assert main([*both, "--seed", "0"]) == 0  # both policies at seed 0
    assert main([*BASE, "--seed", "1", "--out", str(tmp_path)]) == 0  # only `none` at seed 1
    kept = (tmp_path / "none" / "summary.json").stat().st_mtime_ns
    assert main([*both, "--seed", "1", "--resume"]) == 0
    assert (tmp_path / "none" / "summary.json").stat().st_mtime_ns == kept
    assert json.loads((tmp_path / "fixed_2" / "summary.json").read_text())["seed"] == 1
    capsys.readouterr()


def test_resume_with_everything_finished_runs_nothing(tmp_path: Path, monkeypatch, capsys):
    args = [*BASE, "--policy", "fixed:2", "--out", str(tmp_path)]
    assert main(args) == 0
    before = pd.read_csv(tmp_path / "comparison.csv")
    monkeypatch.setattr("specdec_sim.simulator.engine.run_simulation",
                        lambda *a, **k: pytest.fail("a finished policy was simulated again"))
    assert main([*args, "--resume"]) == 0
    after = pd.read_csv(tmp_path / "comparison.csv")
    pd.testing.assert_frame_equal(before.drop(columns="date"), after.drop(columns="date"))
    capsys.readouterr()


# ---- 3. --fail-on-error ------------------------------------------------------------------------------
def test_failed_requests_exit_0_unless_fail_on_error(tmp_path: Path, capsys):
    failing = ["--trace", "sharegpt", "--max-requests", "20", "--quiet", "--policy", "none", "--kv-blocks", "40"]
    assert main(failing) == 0
    assert "fail" in capsys.readouterr().err
    assert main([*failing, "--fail-on-error"]) == 1
    assert main([*BASE, "--fail-on-error"]) == 0
    assert main([*BASE, "--max-sim-time", "0.001", "--fail-on-error"]) == 1  # nothing finished
    capsys.readouterr()


# ---- 4. hostile values -------------------------------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["--rate", "1e-300"], "--rate"), (["--rate", "inf"], "--rate"), (["--rate", "nan"], "--rate"),
    (["--rate", "0"], "--rate"), (["--time-scale", "1e308"], "--time-scale"), (["--time-scale", "nan"], "--time-scale"),
    (["--time-scale", "-1"], "--time-scale"), (["--duration", "1e20"], "--duration"),
    (["--duration", "nan"], "--duration"),
    (["--replicas", str(10**30)], "--replicas"), (["--replicas", "5000"], "4096"), (["--replicas", "-3"], "--replicas"),
    (["--acceptance-spread", "inf"], "--acceptance-spread"), (["--acceptance-spread", "nan"], "--acceptance-spread"),
    (["--acceptance-spread", "-1"], "--acceptance-spread"), (["--max-sim-time", "nan"], "--max-sim-time"),
    (["--max-sim-time", "inf"], "--max-sim-time"), (["--max-sim-time", "0"], "--max-sim-time"),
    (["--ngram-match", "nan"], "--ngram-match"), (["--slo", "ttft:nan"], "--slo"), (["--slo", "tpot:inf"], "--slo"),
    (["--slo", "e2el:-5"], "--slo"), (["--block-size", "0"], "--block-size"),
    (["--block-size", str(10**9)], "--block-size"),
    (["--kv-blocks", str(10**30)], "--kv-blocks"), (["--max-num-seqs", str(10**30)], "--max-num-seqs"),
    (["--max-num-batched-tokens", "0"], "--max-num-batched-tokens"), (["--max-k", "65"], "--max-k"),
    (["--seed", "-1"], "--seed"), (["--seed", str(2**64)], "--seed"), (["--acceptance", "nan"], "--acceptance"),
    (["--rate", "5", "--burstiness", "0"], "--burstiness"), (["--rate", "5", "--burstiness", "inf"], "--burstiness"),
    (["--position-rates", "0.5,nan"], "--position-rates"),
])
def test_hostile_values_are_one_line(args, needle, capsys):
    one_line_error(*run_main([*BASE, *args], capsys), needle)


TYPED = [flag_of(f) for cls in (TrafficSpec, SimConfig) for f in option_fields(cls)
         if f.metadata["cli"]["parse"] is not None and flag_of(f) != "--slo"] + ["--seed"]


@pytest.mark.parametrize("flag", TYPED)
def test_every_typed_option_with_a_non_numeric_value_is_one_line(flag, capsys):
    one_line_error(*run_main([*BASE, flag, "many"], capsys), flag)


def test_value_checks_live_in_the_config_classes_for_sweep_and_the_api():
    for bad in (dict(acceptance_spread=math.inf), dict(max_sim_time_s=math.nan), dict(slo_ms={"ttft": math.inf}),
                dict(replicas=10**30), dict(replicas=True), dict(ngram_match_prob=math.nan)):
        with pytest.raises(ConfigError):
            SimConfig(**bad).validate()
    for bad in (dict(rate=1e-300), dict(time_scale=1e308), dict(duration_s=math.inf), dict(rate=math.nan),
                dict(burstiness=0.0), dict(max_requests=0)):
        with pytest.raises(ConfigError):
            TrafficSpec(trace="sharegpt", **bad).validate()
    with pytest.raises(ConfigError, match="time-scale|time_scale"):
        load_traffic(TrafficSpec(trace="sharegpt", time_scale=1e9))  # the product: 500 s of trace -> 5e11 s


ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-300, 1e300, 5e-324])
ANY_INT = st.integers(-(2**70), 2**70)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["acceptance_spread", "ngram_match_prob", "max_sim_time_s", "replicas", "max_num_seqs",
                             "max_num_batched_tokens", "kv_blocks", "block_size", "max_k"]), data=st.data())
def test_sim_config_accepts_only_values_the_engine_can_run(name, data):
    value = data.draw(ANY_FLOAT if name in ("acceptance_spread", "ngram_match_prob", "max_sim_time_s") else ANY_INT)
    try:
        SimConfig(**{name: value}).validate()
    except ConfigError as exc:
        assert str(exc).startswith("--") and "\n" not in str(exc)
        return
    lo, hi = {"acceptance_spread": (0, math.inf), "ngram_match_prob": (0, 1), "max_sim_time_s": (5e-324, MAX_CLOCK_S),
              "replicas": (1, 4096), "max_num_seqs": (1, 2**20), "max_num_batched_tokens": (1, 2**31),
              "kv_blocks": (1, 2**40), "block_size": (1, 2**16), "max_k": (0, 64)}[name]
    assert math.isfinite(value) and lo <= value <= hi


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["time_scale", "duration_s", "rate", "burstiness"]), value=ANY_FLOAT,
       count=st.integers(1, 10**7))
def test_traffic_spec_accepts_only_arrivals_the_clock_resolves(name, value, count):
    spec = TrafficSpec(trace="sharegpt", num_requests=count, **({"rate": 1.0} if name == "burstiness" else {}))
    setattr(spec, name, value)
    try:
        spec.validate()
    except ConfigError as exc:
        assert str(exc).startswith("--") and "\n" not in str(exc)
        return
    assert math.isfinite(value) and value > 0
    if spec.rate is not None:
        assert spec.expected_span_s() <= MAX_CLOCK_S


def test_block_size_scales_blocks_not_kv_bytes():
    trace = synthetic_trace(20.0, num_requests=60, prompt_tokens=400, output_tokens=100, seed=1)
    runs = {b: run_simulation(trace, SimConfig(block_size=b, record_steps=False), "none").summary for b in (1, 16, 256)}
    tokens = {b: s["kv_blocks_per_replica"] * b for b, s in runs.items()}
    assert tokens[16] - 16 < tokens[1] <= tokens[16] + 16 and tokens[16] - 256 < tokens[256] <= tokens[16]
    assert runs[1]["preemptions"] == runs[16]["preemptions"] == 0
    assert runs[1]["mean_e2el_ms"] == pytest.approx(runs[16]["mean_e2el_ms"], rel=1e-9)


# ---- 5. no silent no-ops -----------------------------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["--num-requests", "50"], "--num-requests"), (["--burstiness", "0.5"], "--burstiness"),
    (["--max-k", "3", "--policy", "fixed:5"], "fixed:5"), (["--policy", "fixed:8"], "--max-k 7"),
    (["--max-k", "2", "--policy", "smartspec:k_max=4"], "k_max=4"),
    (["--rate", "4", "--time-scale", "2"], "--time-scale"),
    (["--rate", "4", "--duration", "5", "--num-requests", "9"], "--duration"), (["--policy", "none"], "once"),
])
def test_options_that_cannot_apply_are_refused(args, needle, capsys):
    one_line_error(*run_main([*BASE, *args], capsys), needle)


def test_max_k_refusal_says_both_fixes(capsys):
    _, err = run_main([*BASE, "--max-k", "3", "--policy", "fixed:5"], capsys)
    assert "run at k=3" in err and "--max-k" in err


def test_more_requests_than_a_replayed_trace_has_is_refused(tmp_path: Path, capsys):
    small = tmp_path / "small.csv"
    small.write_text("request_id,arrival_time_s,prompt_tokens,output_tokens\n"
                     + "".join(f"{i},{i * 0.1:.1f},50,20\n" for i in range(12)))
    one_line_error(*run_main(["--trace", str(small), "--max-requests", "30", "--quiet", "--policy", "none"], capsys),
                   "30")
    assert run_main(["--trace", str(small), "--max-requests", "12", "--quiet", "--policy", "none"], capsys)[0] == 0
    assert run_main(["--trace", str(small), "--rate", "5", "--num-requests", "30", "--quiet", "--policy", "none"],
                    capsys)[0] == 0


def test_duration_with_rate_generates_arrivals_for_that_long():
    trace = load_traffic(TrafficSpec(trace="sharegpt", rate=20.0, duration_s=5.0), seed=3)
    assert 50 < len(trace) < 150 and trace.arrival_s[-1] < 5.0
    capped = load_traffic(TrafficSpec(trace="sharegpt", rate=20.0, duration_s=5.0, max_requests=10), seed=3)
    assert len(capped) == 10 and (capped.arrival_s == trace.arrival_s[:10]).all()


# ---- 6. progress (--version: test_cli.py) -----------------------------------------------------------------------
def test_every_run_goes_through_the_progress_reporter(monkeypatch, capsys):
    import contextlib

    calls = []

    @contextlib.contextmanager
    def reporter(total, label, disabled=False):
        calls.append((total, label, disabled))
        yield lambda done: None

    monkeypatch.setattr("specdec_sim.simulator.report.progress_reporter", reporter)
    assert main(["--trace", "sharegpt", "--max-requests", "5", "--policy", "none", "--policy", "fixed:2"]) == 0
    assert main([*BASE]) == 0
    assert calls == [(5, "none", False), (5, "fixed:2", False), (5, "none", True)]
    capsys.readouterr()


def test_run_info_records_the_traffic(tmp_path: Path):
    assert main([*BASE, "--out", str(tmp_path)]) == 0
    run = json.loads((tmp_path / "config.json").read_text())["run"]
    assert run["trace"] == "sharegpt" and run["num_requests"] == 5 and run["max_requests"] == 5
    assert run["version"] == specdec_sim.__version__ and len(run["trace_sha256"]) == 64
    assert run["command"].startswith("simulate ") and "--max-requests 5" in run["command"]
    assert cli.file_sha256(run["trace_path"]) == run["trace_sha256"]

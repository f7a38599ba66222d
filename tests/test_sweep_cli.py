"""`sweep` command: option parsing, TOML configs, one-line errors with exit 2, capacity mode, plots."""
from __future__ import annotations

import pandas as pd
import pytest

from specdec_sim.simulator.sweep.cli import build_parser, main, make_sweep_plan

BASE = ["--trace", "sharegpt", "--max-requests", "60", "--no-progress"]


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sweep: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_options_make_the_cartesian_grid(tmp_path):
    plan = make_sweep_plan(build_parser().parse_args(
        ["--trace", "t.csv", "--max-requests", "800", "--policies", "none;fixed:3;fixed:k=2",
         "--time-scales", "1,4", "--seeds", "0,1", "--out", str(tmp_path), "--workers", "2"]))
    spec = plan.spec
    assert spec.policies == ["none", "fixed:3", "fixed:k=2"] and spec.time_scales == [1.0, 4.0]
    assert spec.seeds == [0, 1] and spec.max_requests == 800 and plan.workers == 2
    repeat = make_sweep_plan(build_parser().parse_args(
        ["--policy", "fixed:k=3", "--policy", "none", "--seeds", "0-3", "--out", "x", "--set", "max_k=5",
         "--acceptance", "0.7", "--slo", "ttft:200,tpot:50"]))
    assert repeat.spec.policies == ["fixed:k=3", "none"] and repeat.spec.seeds == [0, 1, 2, 3]
    assert repeat.spec.engine == {"max_k": 5, "acceptance": 0.7, "slo_ms": {"ttft": 200.0, "tpot": 50.0}}


@pytest.mark.parametrize("argv, needle", [
    (["--policies", "none;warp-drive"], "warp-drive"),
    (["--policies", "fixed:k=x"], "fixed"),
    (["--seeds", "a,b"], "--seeds"),
    (["--rates", "-1"], "--rates"),
    (["--trace", "/no/such/file.csv"], "file.csv"),
    (["--calibrations", "no-such-gpu"], "no-such-gpu"),
    (["--set", "max_k=-3"], "max-k"),
    (["--set", "warp=1"], "warp"),
    (["--capacity"], "--capacity-slo"),
    (["--capacity", "--capacity-slo", "ttft:200"], "STAT_METRIC"),
    (["--capacity", "--capacity-slo", "p99_ttft:200", "--rate-lo", "5", "--rate-hi", "1"], "lo < hi"),
    (["--bogus-flag"], "bogus"),
    (["--acceptance", "sometimes"], "sometimes"),
    (["--workers", "-1"], "--workers"),
])
def test_bad_options_exit_2_with_one_line(capsys, tmp_path, argv, needle):
    assert needle in one_line_error(capsys, BASE + ["--out", str(tmp_path)] + argv)


def test_missing_out_and_bad_toml(capsys, tmp_path):
    assert "--out" in one_line_error(capsys, BASE)
    bad = tmp_path / "bad.toml"
    bad.write_text("[sweep]\npolicys = ['none']\n")
    assert "policys" in one_line_error(capsys, ["--config", str(bad)])
    bad.write_text("[sweep\n")
    assert "bad.toml" in one_line_error(capsys, ["--config", str(bad)])
    assert "nope.toml" in one_line_error(capsys, ["--config", str(tmp_path / "nope.toml")])
    for text, needle in (("[sweep]\nmax_requests = 'many'\nout = 'o'\n", "--max-requests"),
                         ("[sweep]\nworkers = 1.5\nout = 'o'\n", "--workers"),
                         ("[sweep]\nout = 'o'\n[engine]\nmax_k = 'seven'\n", "[engine]|--max-k"),
                         ("[sweep]\nout = 'o'\n[engines]\n", "engines")):
        bad.write_text(text)
        err = one_line_error(capsys, ["--config", str(bad)])
        assert any(n in err for n in needle.split("|")), err


def test_toml_config_run_resume_and_plots(tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text("""
[sweep]
traces = ["sharegpt"]
policies = ["none", "fixed:3"]
rates = [2, 8]
seeds = [0]
max_requests = 60
out = "results"
plot = "figures"
workers = 0
progress = false

[engine]
max_k = 5
""")
    assert main(["--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "4 rows (0 failed)" in out
    df = pd.read_csv(tmp_path / "results" / "results.csv")
    assert len(df) == 4 and (df["max_k"] == 5).all() and set(df["rate"]) == {2.0, 8.0}
    figures = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert any("latency" in f for f in figures) and any("speedup" in f for f in figures)
    assert "timeline_k_alpha.png" in figures
    # the command line overrides the file; finished runs are skipped
    assert main(["--config", str(cfg), "--seeds", "0,1", "--workers", "2"]) == 0
    assert "8 rows" in capsys.readouterr().out
    assert len((tmp_path / "results" / "runs.jsonl").read_text().splitlines()) == 8


def test_failed_runs_exit_1_and_are_in_the_table(tmp_path, capsys):
    argv = BASE + ["--rates", "4", "--policies", "none", "--set", "kv_blocks=1", "--out", str(tmp_path),
                   "--workers", "0"]
    code = main(argv)
    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == 1
    if code == 1:
        assert df["status"].iloc[0] == "error" and isinstance(df["error"].iloc[0], str)
    else:  # the engine records requests that never fit as failed requests instead of raising
        assert code == 0 and df["failed"].iloc[0] > 0


def test_capacity_mode(tmp_path, capsys):
    argv = BASE + ["--capacity", "--capacity-slo", "p99_e2el:15000", "--policies", "none;fixed:3",
                   "--rate-lo", "0.5", "--rate-hi", "24", "--tol", "2", "--out", str(tmp_path),
                   "--probe-requests", "60", "--probe-duration", "5",
                   "--workers", "2", "--plot", str(tmp_path / "fig")]
    assert main(argv) == 0
    assert (tmp_path / "fig" / "capacity.png").stat().st_size > 5000
    df = pd.read_parquet(tmp_path / "capacity.parquet")
    assert sorted(df["policy"]) == ["fixed:3", "none"]
    assert {"capacity_rps", "search_status", "evaluations", "slo"} <= set(df.columns)
    assert (df["slo"] == "p99_e2el:15000").all()


def test_interrupt_then_resume(tmp_path):
    """Ctrl-C: exit 130 with one line, finished runs kept; the same command then runs the rest."""
    import signal
    import subprocess
    import sys
    import time

    argv = ["--trace", "sharegpt", "--max-requests", "100", "--policies", "none;fixed:3", "--rates",
            "1,2,4,8,16,32", "--out", str(tmp_path), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "specdec_sim.simulator.sweep.cli", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = tmp_path / "runs.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    done = journal.read_text().count("\n")
    if proc.returncode == 0:  # finished before the signal landed: nothing to resume
        assert done == 12
        return
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()] and "resume" in err
    assert 1 <= done < 12
    assert main(argv[:-3] + ["--workers", "0", "--no-progress"]) == 0
    assert journal.read_text().count("\n") == 12


# ---------------------------------------------------------------- issue 12: axes, resume, hostile values, faults

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from specdec_sim import __version__  # noqa: E402
from specdec_sim.simulator.sweep.runner import expand_grid  # noqa: E402


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out


def test_repeated_set_and_toml_lists_are_engine_axes(tmp_path):
    plan = make_sweep_plan(build_parser().parse_args(
        ["--set", "acceptance=0.5", "--set", "acceptance=0.8", "--set", "max_k=5", "--rates", "2",
         "--out", str(tmp_path)]))
    assert plan.spec.engine_axes == {"acceptance": [0.5, 0.8]} and plan.spec.engine == {"max_k": 5}
    runs = expand_grid(plan.spec)
    assert sorted(dict(r.engine)["acceptance"] for r in runs) == [0.5, 0.8]
    single = make_sweep_plan(build_parser().parse_args(["--set", "acceptance=0.5", "--set", "max_k=5", "--rates", "2",
                                                  "--out", str(tmp_path)]))
    assert single.spec.engine_axes == {} and expand_grid(single.spec)[0].run_id in {r.run_id for r in runs}
    cfg = tmp_path / "axis.toml"
    cfg.write_text("[sweep]\nout = 'o'\n[engine]\nacceptance = [0.5, 0.8]\nmax_k = 5\n"
                   "position_rates = [0.9, 0.8]\n")
    toml_plan = make_sweep_plan(build_parser().parse_args(["--config", str(cfg)]))
    assert toml_plan.spec.engine_axes == {"acceptance": [0.5, 0.8]}
    assert toml_plan.spec.engine == {"max_k": 5, "position_rates": [0.9, 0.8]}  # one list-valued option
    cfg.write_text("[sweep]\nout = 'o'\n[engine]\nposition_rates = [[0.9], [0.8, 0.7]]\n")
    assert make_sweep_plan(build_parser().parse_args(["--config", str(cfg)])).spec.engine_axes == {
        "position_rates": [[0.9], [0.8, 0.7]]}


def test_acceptance_axis_runs_and_is_shown(tmp_path, capsys):
    argv = BASE + ["--rates", "4", "--policies", "fixed:3", "--set", "acceptance=0.3", "--set", "acceptance=0.9",
                   "--seeds", "0,1", "--out", str(tmp_path), "--workers", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"sweep: running 4 runs into {tmp_path}"
    assert "mean over 2 seeds (±std)" in out and "acceptance" in out
    df = pd.read_csv(tmp_path / "results.csv")
    assert sorted(set(df["acceptance"])) == [0.3, 0.9]
    accepted = df.groupby("acceptance")["mean_acceptance_length"].mean()
    assert accepted[0.9] > accepted[0.3] and len(set(df["mean_e2el_ms"])) == 4
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"sweep: resumed 4 of 4 runs from {tmp_path}")


def test_config_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    from specdec_sim import traces

    exp = tmp_path / "exp"
    (exp / "data").mkdir(parents=True)
    (exp / "data" / "t.csv").write_bytes(Path(traces.bundled_trace("azure-conv")).read_bytes()[:4000]
                                         .rsplit(b"\n", 1)[0] + b"\n")
    (exp / "cal.json").write_text("{}")
    cfg = exp / "c.toml"
    cfg.write_text("[sweep]\ntraces = ['data/t.csv', 'sharegpt']\ncalibrations = ['cal.json', "
                   "'turbospec-llama3-8b-eagle-h100']\nout = 'results'\nplot = 'figs'\n")
    monkeypatch.chdir(tmp_path)
    plan = make_sweep_plan(build_parser().parse_args(["--config", "exp/c.toml"]))
    assert plan.spec.traces == ["exp/data/t.csv", "sharegpt"]
    assert plan.spec.calibrations == ["exp/cal.json", "turbospec-llama3-8b-eagle-h100"]
    assert plan.out == Path("exp/results") and plan.plot == Path("exp/figs")


@pytest.mark.parametrize("argv, needle", [
    (["--tol", "nan"], "--tol"), (["--tol", "inf"], "--tol"), (["--tol", "0"], "--tol"), (["--tol", "-1"], "--tol"),
    (["--rate-lo", "nan"], "--rate-lo"), (["--rate-hi", "inf"], "--rate-hi"), (["--rate-lo", "-inf"], "--rate-lo"),
    (["--probe-duration", "nan"], "--probe-duration"), (["--warmup", "1.5"], "--warmup"),
    (["--probe-requests", "3"], "--probe-requests"), (["--grow", "-1"], "--grow"),
])
def test_hostile_capacity_values_are_one_line_errors(capsys, tmp_path, argv, needle):
    cap = ["--capacity", "--capacity-slo", "p99_ttft:2000"]
    assert needle in one_line_error(capsys, BASE + ["--out", str(tmp_path)] + cap + argv)


@pytest.mark.parametrize("argv", [["--rates", "nan"], ["--rates", "2,inf"], ["--time-scales", "nan"],
                                  ["--time-scales", "inf"]])
def test_non_finite_rates_and_scales_are_one_line_errors(capsys, tmp_path, argv):
    assert argv[0] in one_line_error(capsys, BASE + ["--out", str(tmp_path)] + argv)


def test_capacity_cli_reports_mean_over_seeds_and_warns_on_short_traces(tmp_path, capsys):
    argv = ["--trace", "sharegpt", "--max-requests", "60", "--no-progress", "--capacity", "--capacity-slo",
            "p99_e2el:20000", "--policies", "fixed:3", "--seeds", "0,1", "--rate-lo", "0.5", "--rate-hi", "8",
            "--tol", "2", "--probe-requests", "40", "--probe-duration", "5", "--replicas", "2",
            "--out", str(tmp_path), "--workers", "0"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "capacity: mean over 2 seeds (±std)" in captured.out
    assert captured.err.count("poorly sampled") == 1
    df = pd.read_csv(tmp_path / "capacity.csv")
    assert len(df) == 2 and set(df["seed"]) == {0, 1} and (df["rate_hi"] == 16.0).all()


# ---------------------------------------------------------------- faults: no orphan workers, SIGTERM


def _children(pid: int) -> set[int]:
    kids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.add(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_for(predicate, limit_s: float, step_s: float = 0.1) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def _kill_all(pids: set[int]) -> None:
    """Clean up after a failing check: no test leaves an orphan behind."""
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _start_sweep(tmp_path: Path, max_requests: int, seeds: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "specdec_sim.simulator.sweep.cli", "--trace", "sharegpt", "--max-requests",
            str(max_requests), "--rates", "4", "--policies", "none", "--seeds", seeds, "--workers", "2",
            "--no-progress", "--out", str(tmp_path / "out")]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _workers_of(proc: subprocess.Popen) -> set[int]:
    """The spawned pool workers of `proc` (waits until two are up)."""
    def spawned() -> set[int]:
        return {k for k in _children(proc.pid)
                if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes().replace(b"\0", b" ")}
    assert _wait_for(lambda: len(spawned()) >= 2 or proc.poll() is not None, 120), "workers never started"
    return spawned()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_the_parent_leaves_no_worker(tmp_path):
    proc = _start_sweep(tmp_path, 2000, "0-199")
    try:
        workers = _workers_of(proc)
        assert proc.poll() is None and len(workers) >= 2
        proc.kill()
        proc.wait(10)
        assert _wait_for(lambda: not any(_alive(w) for w in workers), 10), "a sweep worker outlived its parent"
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        _kill_all(workers if "workers" in locals() else set())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    proc = _start_sweep(tmp_path, 60, "0-399")
    journal = tmp_path / "out" / "runs.jsonl"
    try:
        workers = _workers_of(proc)
        assert _wait_for(lambda: journal.exists() and journal.read_text().count("\n") >= 1, 120)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        if proc.returncode is None or proc.returncode != 143:
            _kill_all(workers if "workers" in locals() else set())
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    kept = journal.read_text().splitlines()
    assert 1 <= len(kept) < 400
    assert _wait_for(lambda: not any(_alive(w) for w in workers), 10)
    assert len(pd.read_csv(tmp_path / "out" / "results.csv")) == len(kept)


def test_timeline_title_names_its_unit(tmp_path, monkeypatch, capsys):
    from specdec_sim.simulator.sweep import plots

    titles: list[str] = []
    monkeypatch.setattr(plots, "plot_timeline", lambda steps, path, title="": titles.append(title) or path)
    assert main(BASE + ["--rates", "4", "--policies", "none;fixed:3", "--out", str(tmp_path / "r"),
                        "--plot", str(tmp_path / "f"), "--workers", "0"]) == 0
    assert titles == ["fixed:3 on sharegpt at 4 req/s (Poisson), seed 0"]
    assert main(BASE + ["--time-scales", "4", "--policies", "fixed:3", "--out", str(tmp_path / "s"),
                        "--plot", str(tmp_path / "g"), "--workers", "0"]) == 0
    assert titles[-1] == "fixed:3 on sharegpt at time scale x4, seed 0"


def test_simulate_and_sweep_answer_the_same_question_the_same_way(tmp_path, capsys):
    """The same settings give the same summary from both commands (one prepared run: defaults, checks, rate)."""
    import json

    import pandas as pd

    from specdec_sim.simulator.cli import main as simulate_main

    assert simulate_main(["--trace", "sharegpt", "--rate", "8", "--max-requests", "60", "--policy", "fixed:3",
                          "--out", str(tmp_path / "sim"), "--quiet"]) == 0
    assert main(["--trace", "sharegpt", "--rates", "8", "--max-requests", "60", "--policies", "fixed:3",
                 "--workers", "0", "--no-progress", "--out", str(tmp_path / "sweep")]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "sim" / "fixed_3" / "summary.json").read_text())
    row = pd.read_csv(tmp_path / "sweep" / "results.csv").iloc[0]
    assert row["offered_rate"] == summary["request_rate"] == 8.0
    for key in ("completed", "mean_e2el_ms", "p99_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "output_throughput",
                "mean_acceptance_length", "num_steps"):
        assert row[key] == pytest.approx(summary[key], rel=1e-12), key


def test_sweep_defaults_are_simulates(tmp_path, capsys):
    """No trace, rate given, no request count: both replay azure-conv's lengths as 1000 requests at seed 0."""
    from specdec_sim.simulator.sweep.runner import RunSpec, SweepSpec, prepared

    spec = SweepSpec(rates=[5.0])
    run = RunSpec(trace=spec.traces[0], rate=5.0, seed=spec.seeds[0])
    assert spec.traces == ["azure-conv"] and spec.seeds == [0]
    assert len(prepared(run).trace) == 1000

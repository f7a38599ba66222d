"""`sweep` command: option parsing, TOML configs, one-line errors with exit 2, capacity mode, plots."""
from __future__ import annotations

import pandas as pd
import pytest

from specdec_sim.simulator.sweep.cli import build_parser, main, make_plan

BASE = ["--trace", "sharegpt", "--max-requests", "60", "--no-progress"]


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sweep: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_options_make_the_cartesian_grid(tmp_path):
    plan = make_plan(build_parser().parse_args(
        ["--trace", "t.csv", "--max-requests", "800", "--policies", "none;fixed:3;fixed:k=2",
         "--time-scales", "1,4", "--seeds", "0,1", "--out", str(tmp_path), "--workers", "2"]))
    spec = plan.spec
    assert spec.policies == ["none", "fixed:3", "fixed:k=2"] and spec.time_scales == [1.0, 4.0]
    assert spec.seeds == [0, 1] and spec.max_requests == 800 and plan.workers == 2
    repeat = make_plan(build_parser().parse_args(
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
                         ("[sweep]\nout = 'o'\n[engine]\nmax_k = 'seven'\n", "[engine]"),
                         ("[sweep]\nout = 'o'\n[engines]\n", "engines")):
        bad.write_text(text)
        assert needle in one_line_error(capsys, ["--config", str(bad)])


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

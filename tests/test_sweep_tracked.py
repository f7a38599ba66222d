"""A sweep never modifies files git tracks unless asked to resume there (issue 22 item 6): the committed experiment's
config, run as README says with a fresh --out and --plot, reproduces its committed rows without touching them."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from specdec_sim.simulator.sweep.cli import main
from specdec_sim.simulator.sweep.store import tracked_files

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "smartspec_sharegpt"
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def digests(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def committed(tmp_path) -> Path:
    """A git repository holding a sweep config whose `out` (results/) and `plot` (figures/) are committed."""
    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    (repo / "figures").mkdir()
    (repo / "config.toml").write_text('[sweep]\ntraces = ["sharegpt"]\npolicies = ["none"]\nmax_requests = 20\n'
                                      'out = "results"\nplot = "figures"\nworkers = 0\nprogress = false\n')
    (repo / "results" / "results.csv").write_text("run_id,status\ncommitted,ok\n")
    (repo / "figures" / "speedup.png").write_bytes(b"not a real png")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "results")
    return repo


@needs_git
def test_a_sweep_into_committed_results_is_refused_in_one_line_and_changes_nothing(committed, capsys):
    before = digests(committed)
    assert main(["--config", str(committed / "config.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sweep: error: --out ") and "results" in err
    assert "git tracks" in err and "--resume" in err
    assert main(["--config", str(committed / "config.toml"), "--out", str(committed.parent / "fresh")]) == 2
    assert "--plot" in capsys.readouterr().err  # the committed figures are protected too
    assert digests(committed) == before and git(committed, "status", "--porcelain") == ""


@needs_git
def test_a_fresh_out_runs_and_resume_writes_where_asked(committed, capsys):
    fresh = committed.parent / "fresh"
    config = str(committed / "config.toml")
    assert main(["--config", config, "--out", str(fresh), "--plot", str(fresh / "figures")]) == 0
    assert len(pd.read_csv(fresh / "results.csv")) == 1
    assert git(committed, "status", "--porcelain") == ""
    assert main(["--config", str(committed / "config.toml"), "--resume"]) == 0
    assert "results/results.csv" in git(committed, "status", "--porcelain")  # asked to: it continued the sweep there


def test_tracked_files_is_empty_outside_a_work_tree(tmp_path):
    assert tracked_files(tmp_path / "not" / "there") == [] and tracked_files(tmp_path) == []


@needs_git
def test_readme_command_reproduces_committed_rows_in_a_fresh_directory(tmp_path, capsys):
    """The experiment's own config with a fresh --out/--plot (a cut of its grid: one rate, seed, policy) gives the
    committed row bit for bit, and the experiment's files stay as committed."""
    if not tracked_files(EXPERIMENT / "results"):
        pytest.skip("not a git checkout of the experiment")
    before = digests(EXPERIMENT)
    assert main(["--config", str(EXPERIMENT / "config.toml")]) == 2  # without a fresh --out: refused, not resumed
    capsys.readouterr()
    out = tmp_path / "smartspec_sharegpt"
    assert main(["--config", str(EXPERIMENT / "config.toml"), "--out", str(out), "--plot", str(out / "figures"),
                 "--rates", "64", "--seeds", "0", "--policies", "none", "--workers", "0", "--no-progress"]) == 0
    assert "running 1 run into" in capsys.readouterr().out
    row = pd.read_csv(out / "results.csv").set_index("run_id")
    committed = pd.read_csv(EXPERIMENT / "results" / "results.csv").set_index("run_id").loc[row.index]
    metrics = ["completed", "mean_e2el_ms", "p99_e2el_ms", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "mean_k"]
    pd.testing.assert_frame_equal(row[metrics], committed[metrics])
    assert digests(EXPERIMENT) == before


def test_resuming_a_finished_sweep_rewrites_no_table(tmp_path, capsys):
    argv = ["--trace", "sharegpt", "--max-requests", "20", "--policies", "none", "--workers", "0", "--no-progress",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    stamps = {name: (tmp_path / name).stat().st_mtime_ns for name in ("results.csv", "results.parquet", "runs.jsonl")}
    assert main(argv) == 0
    assert "all finished, nothing to run" in capsys.readouterr().out
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in stamps} == stamps

"""`simulate` end to end on small files: outputs pandas reads, byte-identical reruns, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import specdec_sim

from specdec_sim.simulator.cli import main

SIMULATE = [sys.executable, "-m", "specdec_sim.simulator.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SIMULATE, *args], capture_output=True, text=True, timeout=120)


def test_compares_policies_side_by_side(tmp_path: Path, capsys):
    code = main(["--trace", "sharegpt", "--max-requests", "60", "--policy", "none", "--policy", "fixed:3",
                 "--slo", "ttft:500,tpot:50", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "fixed:3" in printed and "speedup" in printed
    table = pd.read_csv(tmp_path / "comparison.csv")
    assert list(table["policy_spec"]) == ["none", "fixed:3"]
    assert table.loc[0, "speedup_vs_none"] == pytest.approx(1.0)
    assert table.loc[1, "speedup_vs_none"] > 1.0
    for slug in ("none", "fixed_3"):
        summary = json.loads((tmp_path / slug / "summary.json").read_text())
        for key in ("completed", "mean_ttft_ms", "p99_tpot_ms", "median_itl_ms", "p99_e2el_ms",
                    "request_throughput", "output_throughput", "request_goodput"):
            assert key in summary
        requests = pd.read_csv(tmp_path / slug / "requests.csv")
        assert len(requests) == 60 and (requests["status"] == "finished").all()
        steps = pd.read_parquet(tmp_path / slug / "steps.parquet")
        assert steps["emitted"].sum() == requests["output_tokens"].sum()


def test_same_seed_gives_byte_identical_files(tmp_path: Path):
    args = ["--trace", "sharegpt", "--max-requests", "40", "--policy", "fixed:2", "--seed", "3", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for name in ("requests.csv", "steps.parquet"):
        assert (tmp_path / "a" / "fixed_2" / name).read_bytes() == (tmp_path / "b" / "fixed_2" / name).read_bytes()
    a, b = (json.loads((tmp_path / d / "fixed_2" / "summary.json").read_text()) for d in ("a", "b"))
    assert a.pop("command").replace(str(tmp_path / "a"), "OUT") == b.pop("command").replace(str(tmp_path / "b"), "OUT")
    a.pop("date"), b.pop("date")  # wall-clock stamp of the run (vLLM's "date")
    assert a == b


def test_synthetic_rate_and_multi_replica(tmp_path: Path):
    code = main(["--trace", "azure-conv", "--rate", "8", "--num-requests", "80", "--replicas", "2",
                 "--router", "least-tokens", "--policy", "fixed:2", "--out", str(tmp_path), "--quiet",
                 "--no-step-log"])
    assert code == 0
    requests = pd.read_csv(tmp_path / "fixed_2" / "requests.csv")
    assert set(requests["replica"]) == {0, 1}
    assert not (tmp_path / "fixed_2" / "steps.parquet").exists()


@pytest.mark.parametrize("args,needle", [
    (["--trace", "no/such/file.csv"], "file.csv"),
    (["--policy", "warp-drive"], "warp-drive"),
    (["--calibration", "no-such-gpu"], "no-such-gpu"),
    (["--replicas", "0"], "--replicas"),
    (["--slo", "ttft=200"], "--slo"),
    (["--acceptance", "1.5"], "--acceptance"),
    (["--rate", "-1"], "--rate"),
    (["--position-rates", "0.5,x"], "--position-rates"),
])
def test_bad_options_give_one_line_and_exit_2(args, needle):
    proc = run_cli("--trace", "sharegpt", "--max-requests", "5", "--quiet", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_malformed_trace_names_row_and_column(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,arrival_time_s,prompt_tokens,output_tokens\n0,0.0,10,5\n1,0.5,abc,5\n")
    proc = run_cli("--trace", str(bad), "--quiet")
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert "bad.csv" in message and "prompt_tokens" in message and "\n" not in message


def test_help_explains_options_with_units():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for text in ("--time-scale", "req/s", "--kv-blocks", "ms", "--max-k"):
        assert text in proc.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"simulate {specdec_sim.__version__}"

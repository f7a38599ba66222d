"""One name per thing across the commands (issue 22 item 9): every command answers `--version`, `simulate` and
`sweep` spell the progress switch the same way (both spellings accepted, one documented), `--help` states each
default once and none on flags, and `build-k-table` covers the engine's whole batch range in the form
`vllm-table:table=FILE` reads (a table stopping short of max_num_seqs is refused, never run at K = 0)."""
from __future__ import annotations

import importlib
import io
import json
import re
import tomllib
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from specdec_sim.policies import make_policy

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
OLD_NAMES = {"profile-acceptance"}  # kept for old scripts; it prints a note and runs measure-acceptance


def _main(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("command", sorted(set(SCRIPTS) - OLD_NAMES))
def test_every_command_answers_version(command, capsys):
    try:
        code = _main(SCRIPTS[command])(["--version"])
    except SystemExit as exc:
        code = exc.code
    assert code in (0, None)
    assert capsys.readouterr().out.strip() == f"{command} 0.1.0"


def _parser(command: str):
    if command == "simulate":
        from specdec_sim.simulator.cli import build_parser
    elif command == "sweep":
        from specdec_sim.simulator.sweep.cli import build_parser
    elif command == "fit-acceptance":
        from specdec_sim.acceptance.cli import build_parser
    else:
        from specdec_sim.policies.build_table import _parser as build_parser
    return build_parser()


@pytest.mark.parametrize("command,dest", [("simulate", "quiet"), ("sweep", "no_progress")])
def test_quiet_and_no_progress_are_one_option_and_help_names_one(command, dest):
    parser = _parser(command)
    base = ["--trace", "sharegpt"] if command == "simulate" else ["--out", "x"]
    for spelling in ("--quiet", "--no-progress"):
        assert getattr(parser.parse_args([*base, spelling]), dest) is True
    assert getattr(parser.parse_args(base), dest) is False
    text = parser.format_help()
    assert "--no-progress" in text and "--quiet" not in text


@pytest.mark.parametrize("command", ["simulate", "sweep", "fit-acceptance", "build-k-table"])
def test_help_states_each_default_once_and_none_on_flags(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option
    text = _parser(command).format_help()
    assert not re.search(r"\(default: (True|False|None|\{\}|\(\)|\[\])\)", text)
    for line in text.splitlines():
        assert len(re.findall(r"[(;] ?default\b", line.lower())) <= 1, line  # "(default: 20) (default: None)"
    if command == "simulate":
        step_log = next(line for line in text.splitlines() if "--no-step-log" in line and "per-step log" in line)
        assert "default" not in step_log
        assert re.search(r"--max-k MAX_K .*\(default: 7\)", text)  # a value default is still stated


def test_build_k_table_covers_the_v1_batch_range_and_says_how_to_run_it(tmp_path, capsys):
    from specdec_sim.policies.build_table import main

    out = tmp_path / "table.json"
    assert main(["--out", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table[0][0] == 1 and table[-1][1] == 1024  # vLLM V1 runs up to max_num_seqs 1024 on an H100
    printed = capsys.readouterr().out
    assert f"--policy vllm-table:table={out}" in printed
    inline = re.search(r"inline: (vllm-table:table=\S+)\)", printed).group(1)
    assert make_policy(inline).table == make_policy(f"vllm-table:table={out}").table == table


def test_a_table_that_stops_below_max_num_seqs_is_refused_in_one_line(capsys):
    from specdec_sim.simulator.cli import main

    spec = "vllm-table:table=1-4:5;5-256:2"
    assert main(["--trace", "sharegpt", "--max-requests", "5", "--policy", spec, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("simulate: error: policy 'vllm-table:table=1-4:5;5-256:2': its table "
                                               "stops at batch 256") and "max_num_seqs 1024" in err[0]
    assert main(["--trace", "sharegpt", "--max-requests", "5", "--policy", spec, "--quiet",
                 "--max-num-seqs", "256"]) == 0  # an engine that never runs a larger batch


def test_the_python_api_refuses_a_short_table_too():
    import specdec_sim as sds

    trace = sds.load_traffic(sds.TrafficSpec(trace="sharegpt", max_requests=5), seed=0)
    with pytest.raises(ValueError, match="stops at batch 16 but the engine runs batches up to max_num_seqs 1024"):
        sds.run_simulation(trace, sds.SimConfig(), policy="vllm-table:table=1-16:3", seed=0)
    result = sds.run_simulation(trace, sds.SimConfig(max_num_seqs=16), policy="vllm-table:table=1-16:3", seed=0)
    assert result.summary["completed"] == 5


def test_fit_acceptance_version_needs_no_trace():
    from specdec_sim.acceptance.cli import main

    buffer = io.StringIO()
    with redirect_stdout(buffer), pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and buffer.getvalue().startswith("fit-acceptance ")

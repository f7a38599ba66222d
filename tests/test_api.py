"""The Python API: README's example runs as written, names resolve lazily, and the API is what the CLI runs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import specdec_sim

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs_as_written(capsys):
    text = (ROOT / "README.md").read_text()
    section = text.split("### Use it from Python or a notebook")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["none", "fixed:3", "smartspec"]
    assert len(namespace["steps"]) > 0


def test_every_api_name_resolves():
    for name in specdec_sim.__all__:
        assert getattr(specdec_sim, name) is not None, name
    assert set(dir(specdec_sim)) >= set(specdec_sim.__all__)


def test_importing_the_cost_model_does_not_load_the_simulator_or_torch():
    code = ("import sys, specdec_sim.costmodel, specdec_sim.policies\n"
            "loaded = [m for m in sys.modules if m.startswith(('specdec_sim.simulator', 'simpy', 'torch'))]\n"
            "assert not loaded, loaded\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_api_run_equals_the_cli_run(tmp_path):
    from specdec_sim.simulator.cli import main

    assert main(["--trace", "sharegpt", "--max-requests", "40", "--policy", "fixed:3", "--quiet",
                 "--out", str(tmp_path)]) == 0
    trace = specdec_sim.load_traffic(specdec_sim.TrafficSpec(trace="sharegpt", max_requests=40))
    result = specdec_sim.run_simulation(trace, specdec_sim.SimConfig(), "fixed:3", seed=0)
    import json
    written = json.loads((tmp_path / "fixed_3" / "summary.json").read_text())
    assert written["mean_e2el_ms"] == result.summary["mean_e2el_ms"]

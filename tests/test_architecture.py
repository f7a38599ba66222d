"""The house rules, checked on the source: import arrows point one way and the step loop stays short.

Packages (installed under the `specdec_sim` namespace; see pyproject.toml):
traces, acceptance, costmodel -> policies -> simulator -> simulator.sweep / CLIs; profiler -> costmodel,
acceptance, traces, simulator (never the other way); acceptance -> traces.model only; every room may use
specdec_sim.safe_output (atomic files, interrupts), which imports nothing of ours.
"""
from __future__ import annotations

import ast
import inspect
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]

# package -> the project packages its files may import (itself always allowed); every room may write files
# and handle interrupts, and report bad input in one line, through the two standard-library modules for it
SAFE_OUTPUT = "specdec_sim.safe_output"
CLI_SUPPORT = "specdec_sim.cli_support"
EVERY_ROOM = {SAFE_OUTPUT, CLI_SUPPORT}
ACCEPTANCE = "specdec_sim.acceptance"
ALLOWED = {
    "specdec_sim.traces": {SAFE_OUTPUT},
    ACCEPTANCE: {"specdec_sim.traces", SAFE_OUTPUT},  # of traces, the record model only (checked below)
    "specdec_sim.costmodel": {SAFE_OUTPUT},
    "specdec_sim.policies": {"specdec_sim.costmodel", ACCEPTANCE, SAFE_OUTPUT},
    "specdec_sim.simulator": {"specdec_sim.costmodel", ACCEPTANCE, "specdec_sim.policies", "specdec_sim.traces",
                              SAFE_OUTPUT},
    "specdec_sim.profiler": {"specdec_sim.costmodel", ACCEPTANCE, "specdec_sim.traces", "specdec_sim.simulator",
                             SAFE_OUTPUT},  # the simulator: bench_fit predicts a vllm bench serve run by simulating it
    SAFE_OUTPUT: set(),  # standard library only
    CLI_SUPPORT: set(),  # standard library only
    "specdec_sim": set(),  # the API module imports lazily, by name
}


def project_modules() -> dict[str, Path]:
    """module name -> file, for every .py file of the installed packages."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def imports_of(path: Path) -> set[str]:
    """Every `specdec_sim...` module a file imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("specdec_sim")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("specdec_sim"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


MODULES = project_modules()


def owner(module: str) -> str:
    """The package (of ALLOWED) a module belongs to."""
    return max((p for p in ALLOWED if module == p or module.startswith(p + ".")), key=len)


def test_every_package_folder_is_covered():
    assert {owner(m) for m in MODULES} == set(ALLOWED)
    assert len(MODULES) > 40


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_house(module):
    mine = owner(module)
    for target in imports_of(MODULES[module]):
        if target == "specdec_sim":
            continue
        theirs = owner(target)
        allowed = ALLOWED[mine] | (set() if mine in EVERY_ROOM else EVERY_ROOM)
        assert theirs == mine or theirs in allowed, f"{module} imports {target} ({mine} may not import {theirs})"


def test_engine_never_imports_sweeps_and_policies_never_import_the_simulator():
    sweep = "specdec_sim.simulator.sweep"
    for module, path in MODULES.items():
        targets = imports_of(path)
        if module.startswith("specdec_sim.simulator") and not module.startswith(sweep):
            assert not [t for t in targets if t.startswith(sweep)], f"{module} imports the sweep package"
        if module.startswith(("specdec_sim.policies", "specdec_sim.costmodel", "specdec_sim.traces", ACCEPTANCE)):
            assert not [t for t in targets if t.startswith("specdec_sim.simulator")], module


def test_simulator_never_imports_the_profiler():
    """The profiler simulates bench runs (bench_fit); the simulator must not need the profiler back."""
    for module, path in MODULES.items():
        if owner(module) in ("specdec_sim.simulator", "specdec_sim.policies", "specdec_sim.costmodel",
                             "specdec_sim.traces", ACCEPTANCE):
            assert not [t for t in imports_of(path) if t.startswith("specdec_sim.profiler")], module


def test_acceptance_reads_of_traces_only_the_record_model_and_traces_never_read_acceptance():
    for module, path in MODULES.items():
        targets = {t for t in imports_of(path) if t != "specdec_sim"}
        if module.startswith(ACCEPTANCE):
            of_traces = {t for t in targets if owner(t) == "specdec_sim.traces"}
            assert of_traces <= {"specdec_sim.traces.model", "specdec_sim.traces.model.Trace"}, (module, of_traces)
        if module.startswith("specdec_sim.traces"):
            assert not [t for t in targets if t.startswith(ACCEPTANCE)], module


def test_acceptance_lives_in_one_package():
    """No acceptance module outside the acceptance package (the torch measurement of spans stays in profiler)."""
    strays = [m for m in MODULES if "acceptance" in m.rsplit(".", 1)[-1] and not m.startswith(ACCEPTANCE)
              and m not in ("specdec_sim.profiler.acceptance_spans", "specdec_sim.profiler.acceptance_cli",
                            "specdec_sim.profiler.acceptance_inputs")]
    assert strays == []


def test_no_import_cycle_between_files():
    graph = {m: {t for t in imports_of(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    # importing a package's submodule runs the package's __init__ first: edges to parents are implicit,
    # so a cycle through them is real too
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_hot_path_of_one_step_fits_on_one_screen():
    from specdec_sim.simulator.replica import Replica

    lines = inspect.getsource(Replica.run).splitlines()
    assert len(lines) <= 40, f"Replica.run is {len(lines)} lines"


def test_scheduler_kv_cache_and_cost_model_are_free_of_simpy_and_io():
    for module in ("specdec_sim.simulator.scheduler", "specdec_sim.simulator.kvcache", "specdec_sim.costmodel.model",
                   "specdec_sim.policies.goodput"):
        tree = ast.parse(MODULES[module].read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"simpy", "pandas", "json", "os", "pathlib"}, f"{module} imports {names & {'simpy'}}"


def test_one_argument_parser_for_every_command():
    """Every command's one-line errors come from specdec_sim.cli_support.OneLineParser, never a local subclass."""
    subclasses = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any("ArgumentParser" in ast.unparse(b) for b in node.bases):
                subclasses.append(f"{module}.{node.name}")
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any("ArgumentParser" in ast.unparse(b) for b in node.bases):
                subclasses.append(f"{path.name}:{node.name}")
    assert subclasses == ["specdec_sim.cli_support.OneLineParser"]


def test_design_reading_order_names_at_most_15_real_files():
    """docs/design.md follows one request from a trace row to summary.json through at most 15 files."""
    import re

    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split("## Read these files in this order", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\s*\d+\. `([\w/]+\.py)`", section, flags=re.M)
    assert 10 <= len(listed) <= 15 and len(set(listed)) == len(listed)
    for rel in listed:
        assert (ROOT / rel).is_file(), rel


def test_a_default_run_imports_no_acceptance_profile_module():
    import subprocess
    import sys

    code = ("import sys\nfrom specdec_sim.simulator.cli import main\n"
            "main(['--trace', 'sharegpt', '--max-requests', '5', '--quiet'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('specdec_sim.acceptance')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = proc.stdout.strip().splitlines()[-1]
    for heavy in ("profile", "sampler", "fit", "shift", "lead", "copies"):
        assert f"'specdec_sim.acceptance.{heavy}'" not in loaded, loaded


def test_simulate_loads_the_calibration_once_and_fits_the_policy_view_once(monkeypatch, tmp_path):
    """One prepared run: three policies share one loaded calibration and one fitted policy view."""
    from specdec_sim.costmodel import calibration as calibration_module
    from specdec_sim.costmodel import policy_view
    from specdec_sim.simulator.cli import main

    loads, fits = [], []
    real_read, real_fit = calibration_module.calibration_from_dict, policy_view.fitted_policy_view
    monkeypatch.setattr(calibration_module, "calibration_from_dict",  # every load_calibration, whoever imported it
                        lambda data, source="<dict>": loads.append(data.get("name")) or real_read(data, source))
    monkeypatch.setattr(policy_view, "fitted_policy_view", lambda truth: fits.append(truth.name) or real_fit(truth))
    assert main(["--trace", "sharegpt", "--max-requests", "5", "--quiet", "--out", str(tmp_path)]) == 0
    assert loads == ["llama3.1-8b-eagle-h100"] and fits == ["llama3.1-8b-eagle-h100"]

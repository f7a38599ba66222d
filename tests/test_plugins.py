"""Policies written outside the package: `module:Class` specs, entry points, and the README example."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from specdec_sim.policies import PolicySpecError, make_policy
from specdec_sim.policies import registry

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> tuple[str, str]:
    """(the custom policy module, the simulate command) from README's custom-policy section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- custom-policy -->")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()
    return code, command


def test_readme_custom_policy_runs_from_a_file_outside_the_package_with_two_replicas(tmp_path):
    code, command = readme_example()
    assert len(code.strip().splitlines()) <= 20
    module = re.search(r"^# (\w+)\.py", code, re.M).group(1)
    (tmp_path / f"{module}.py").write_text(code)
    assert command.startswith("simulate ") and "--replicas 2" in command
    args = command.split()[1:] + ["--out", str(tmp_path / "out"), "--quiet"]
    proc = subprocess.run([sys.executable, "-c", "import sys; from specdec_sim.simulator.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    spec = next(a for a in command.split() if a.startswith(f"{module}:"))
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", spec).strip("_")
    requests = pd.read_csv(tmp_path / "out" / slug / "requests.csv")
    assert set(requests["replica"]) == {0, 1} and (requests["status"] == "finished").all()
    steps = pd.read_parquet(tmp_path / "out" / slug / "steps.parquet")
    assert steps["k_max"].max() > 0  # it speculated at least sometimes


def test_module_class_spec_builds_a_fresh_instance_with_typed_parameters(tmp_path, monkeypatch):
    (tmp_path / "userpol.py").write_text(
        "class Fixed:\n"
        "    def __init__(self, k=1, scale=1.0, on=False, label='x'):\n"
        "        self.k, self.scale, self.on, self.label = k, scale, on, label\n"
        "    def propose(self, batch):\n"
        "        return [self.k] * batch.size\n"
        "    def observe(self, outcome):\n"
        "        pass\n")
    monkeypatch.chdir(tmp_path)
    a = make_policy("userpol:Fixed:k=4,scale=0.5,on=true,label=abc")
    b = make_policy("userpol:Fixed:k=4,scale=0.5,on=true,label=abc")
    assert a is not b and a.inner is not b.inner
    assert (a.inner.k, a.inner.scale, a.inner.on, a.inner.label) == (4, 0.5, True, "abc")
    assert a.name == "userpol:Fixed:k=4,scale=0.5,on=true,label=abc" and a.estimated_alpha() is None


@pytest.mark.parametrize("spec,needle", [
    ("no_such_module_xyz:Policy", "cannot import module 'no_such_module_xyz'"),
    ("json:NoSuchClass", "has no 'NoSuchClass'"),
    ("json:JSONDecoder:warp=1", "failed"),
    ("json:JSONEncoder", "has no propose"),
    ("not-a-policy", "unknown policy"),
])
def test_bad_module_or_class_is_one_line_naming_the_spec(spec, needle):
    with pytest.raises(PolicySpecError) as info:
        make_policy(spec)
    message = str(info.value)
    assert needle in message and spec in message and "\n" not in message


def test_bad_plugin_spec_on_the_command_line_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import sys; from specdec_sim.simulator.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", "--policy", "nowhere_mod:Mine", "--max-requests", "5"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "nowhere_mod:Mine" in proc.stderr


def test_entry_point_names_an_installed_policy(monkeypatch):
    class EntryPoint:
        name, value = "always-two", "specdec_sim.policies.base:FixedK"

    monkeypatch.setattr(registry, "entry_points", lambda group: [EntryPoint()] if group == registry.ENTRY_POINT_GROUP
                        else [])
    policy = make_policy("always-two:k=2")
    assert policy.name == "fixed:2" and policy.k == 2

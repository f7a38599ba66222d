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


# --- issue 22 item 1: a plugin's output is checked; the Python API takes any object with propose/observe ----

class TwoEach:
    """A policy object as README describes one: propose and observe, nothing else but a name."""

    name = "two-each"

    def __init__(self, k: int = 2):
        self.k = k

    def propose(self, batch):
        return [self.k] * batch.size

    def observe(self, outcome):
        pass


class Nameless:
    def propose(self, batch):
        return [2] * batch.size

    def observe(self, outcome):
        pass


def _small_run(policy):
    import specdec_sim as sds

    trace = sds.load_traffic(sds.TrafficSpec(trace="sharegpt", rate=8, num_requests=40), seed=0)
    return sds.run_simulation(trace, sds.SimConfig(), policy=policy, seed=0)


def test_python_api_runs_an_object_with_only_propose_observe_and_name():
    result = _small_run(TwoEach(k=2))  # failed with AttributeError: estimated_alpha before
    assert result.policy_name == "two-each" and result.summary["completed"] == 40
    assert result.summary["mean_k"] == pytest.approx(2.0, abs=0.05)
    assert result.steps["est_alpha"].isna().all()


def test_python_api_runs_an_object_without_a_name():
    """Any object with propose/observe runs from Python (issue 22.1); it is named by its class."""
    assert _small_run(Nameless()).policy_name == "Nameless"


def test_python_api_refuses_a_bad_proposal_in_one_line_naming_policy_step_and_value():
    from specdec_sim.policies.checked import PolicyError

    class Short(TwoEach):
        def propose(self, batch):
            return [1]

    with pytest.raises(PolicyError) as info:
        _small_run(Short())
    message = str(info.value)
    assert message.startswith("policy 'two-each': step ") and "1 proposal length for a batch of" in message
    assert "\n" not in message


def test_built_in_policies_stay_on_the_fast_path_and_plugins_are_checked(tmp_path, monkeypatch):
    from specdec_sim.policies.checked import CheckedPolicy
    from specdec_sim.policies.registry import BUILTIN_TYPES, REGISTRY, as_policy

    for spec in ("none", "fixed:3", "vllm-disable", "vllm-table:table=1-4:5;5-1024:0", "smartspec", "turbospec",
                 "goodput-greedy", "oracle"):
        policy = make_policy(spec)
        assert type(policy) in BUILTIN_TYPES and as_policy(policy) is policy, spec
    assert len(BUILTIN_TYPES) == len(REGISTRY)
    (tmp_path / "userpol2.py").write_text("from specdec_sim.policies import FixedK\n"
                                          "class Sub(FixedK):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    assert isinstance(make_policy("userpol2:Sub"), CheckedPolicy)  # a subclass may override anything
    wrapped = as_policy(TwoEach())
    assert isinstance(wrapped, CheckedPolicy) and as_policy(wrapped) is wrapped and wrapped.k == 2


@pytest.mark.parametrize("ks,problem", [
    ([1], "1 proposal length for a batch of 3 requests"), ([1, 1, 1, 1], "4 proposal lengths"),
    ([1, 2.0, 1], "k=2.0 (float) for request 1, not an integer"), ([1, True, 1], "k=True (bool)"),
    ([1, "2", 1], "k='2' (str)"), ([1, None, 1], "k=None"), ([0, 0, -1], "k=-1 for request 2, outside 0..7"),
    ([8, 0, 0], "k=8 for request 0, outside 0..7 (--max-k)"), (None, "returned None (NoneType)"),
    ({0: 1}, "(dict), not a list"), ("111", "(str), not a list"),
])
def test_checked_proposal_names_what_is_wrong(ks, problem):
    from specdec_sim.policies.checked import checked_proposal

    assert problem in checked_proposal(ks, 3, 7)


def test_checked_proposal_accepts_integers_of_any_kind_as_plain_ints():
    import numpy as np

    from specdec_sim.policies.checked import checked_proposal

    for ks in ([0, 3, 7], (0, 3, 7), np.array([0, 3, 7]), [np.int64(0), np.int32(3), 7]):
        out = checked_proposal(ks, 3, 7)
        assert out == [0, 3, 7] and all(type(k) is int for k in out)

"""The built wheel installs under one namespace and shadows no other distribution's top-level package.

`simulator`, `policies`, `traces` and `profiler` are names of unrelated PyPI distributions. This
test builds the wheel, installs it into a fresh target directory next to stand-ins of those four
packages, and checks that `simulate` and `profile-gpu --help` work and the stand-ins import as
themselves. (Checked once by hand with the real PyPI packages `traces`, `policies`, `profiler` in a
fresh venv; see README.)
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OTHERS = ("simulator", "policies", "traces", "profiler")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return next(out.glob("*.whl"))


def test_wheel_has_one_top_level_package_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"specdec_sim"}
    for data in ("specdec_sim/costmodel/calibrations/turbospec-llama3-8b-eagle-h100.json",
                 "specdec_sim/traces/data/azure2023_conv_first30min.csv",
                 "specdec_sim/acceptance/profiles/sharegpt-eagle.json"):
        assert data in names
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "simulate = specdec_sim.simulator.cli:main" in entry


def test_installed_beside_same_named_packages_both_work(wheel, tmp_path):
    target, others = tmp_path / "site", tmp_path / "others"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in OTHERS:
        (others / name).mkdir(parents=True)
        (others / name / "__init__.py").write_text(f"WHO = 'the other {name}'\n")
    env = {"PYTHONPATH": f"{target}:{others}", "PATH": "/usr/bin:/bin"}
    check = ("import sys\n"
             "from specdec_sim.simulator.cli import main\n"
             "assert main(['--trace', 'sharegpt', '--max-requests', '20', '--policy', 'fixed:3', '--quiet']) == 0\n"
             "import specdec_sim, traces, policies, profiler, simulator\n"
             f"assert specdec_sim.__file__.startswith({str(target)!r}), specdec_sim.__file__\n"
             "assert [m.WHO for m in (simulator, policies, traces, profiler)] == "
             f"{[f'the other {n}' for n in OTHERS]!r}\n"
             "from specdec_sim.profiler.measure_cli import main as profile\n"
             "try:\n    profile(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
             "print('ok')\n")
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path[:0] = {[str(target), str(others)]!r}\n"
                           + check], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]

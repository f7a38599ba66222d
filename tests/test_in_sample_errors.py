"""In-sample error of the shipped calibrations (issue 20: a check that fails CI when an in-sample number regresses).

Sources of the measured sets: `profiler/data/SOURCE.md` (vLLM #20780, #32374, #12101, SpecDecode-Bench).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import in_sample_errors as ise  # noqa: E402

from specdec_sim.profiler.published import read_published  # noqa: E402


@pytest.fixture(scope="module")
def errors():
    return ise.all_errors(read_published())


def test_every_v1_build_of_the_shipped_set_is_checked(errors):
    """The default calibration and the 70B ones carry the setting their points were selected by."""
    assert {"llama3.1-8b-eagle-h100", "llama3.1-8b-eagle3-h100", "llama3-70b-tp4-ngram-h100"} <= set(errors)
    assert "vllm32374_itl" in errors["llama3.1-8b-eagle-h100"]
    assert errors["llama3.1-8b-eagle-a100"] == {}  # no published A100 serving measurement: nothing in sample


def test_stored_fit_errors_are_what_the_current_cost_model_gives(errors):
    """A change to the cost model that moves an in-sample error must come with rebuilt calibrations
    (`python benchmarks/build_shipped_calibrations.py --vidur DIR`)."""
    stale = [f"{cal} {name}: stored {e['stored']} now {e['now']}"
             for cal, sets in errors.items() for name, e in sets.items() if abs(e["stored"] - e["now"]) > 0.01]
    assert not stale, stale


def test_no_in_sample_error_rose_above_its_ceiling(errors):
    """`benchmarks/data/in_sample_ceiling.json` holds the errors of the last accepted build (+0.05); an intended rise
    is written with `python benchmarks/in_sample_errors.py --write` and committed with its reason."""
    assert ise.regressions(errors, json.loads(ise.CEILING.read_text(encoding="utf-8"))) == []


def test_a_worse_error_is_reported_with_calibration_set_and_numbers():
    """The check can fail: an error above its ceiling, and a set with no ceiling, each give one line."""
    errors = {"cal-a": {"set-x": {"stored": 3.0, "now": 3.2}, "set-y": {"stored": 1.0, "now": 1.0}}}
    lines = ise.regressions(errors, {"cal-a": {"set-x": 3.05}})
    assert lines == ["cal-a set-x: in-sample error 3.200 above its ceiling 3.050",
                     "cal-a set-y: no ceiling in in_sample_ceiling.json (run --write)"]
    assert ise.regressions(errors, ise.ceilings(errors)) == []

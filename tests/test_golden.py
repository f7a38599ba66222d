"""Same seed, same options, same bytes: simulate's outputs match committed digests.

The digests in tests/golden/digests.json were made by tests/golden/make_digests.py and equal
those of the commit before the restructure (86948c2), so a refactor that changes any output
file of any policy on any bundled trace fails here. A change meant to alter outputs regenerates
the file and says so in its commit.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "golden"))

import make_digests  # noqa: E402

from specdec_sim.simulator.cli import main as simulate  # noqa: E402


def test_outputs_match_committed_digests():
    expected = json.loads(make_digests.DIGESTS.read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        actual = make_digests.compute(simulate)
    assert actual.keys() == expected.keys()
    mismatched = [f"{case}/{policy}/{name}" for case in expected for policy in expected[case]
                  for name in expected[case][policy]
                  if actual[case].get(policy, {}).get(name) != expected[case][policy][name]]
    assert not mismatched, f"outputs changed: {mismatched[:10]}"
    assert sum(len(v) for v in actual.values()) == sum(len(v) for v in expected.values())

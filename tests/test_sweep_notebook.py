"""notebooks/policy_comparison.ipynb runs top to bottom (nbclient) and shows its figures."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "policy_comparison.ipynb"


def test_policy_comparison_notebook_runs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",  # a hang guard (cells take seconds), not a test
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3
    text = "".join(o.get("text", "") for o in outputs)
    assert "runs from" in text and "steps; mean k" in text
    steps = int(re.search(r"(\d+) steps; mean k", text).group(1))
    assert steps < 20_000  # it stays small enough for CI: counted (simulated steps), never timed

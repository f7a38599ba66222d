"""What the table and its warnings say (issue 22): with --slo, request goodput and SLO attainment are columns
(item 7); failed requests are warned about by kind of reason, each named once with its count, not once per prompt
length (item 5). Small seeded runs; no live timing in any assertion."""
from __future__ import annotations

import io

import pandas as pd
from rich.console import Console

from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine import run_simulation
from specdec_sim.simulator.report import comparison_frame, failure_warnings, print_comparison
from specdec_sim.traces import bundled_trace, load_trace


def trace(name: str = "azure-conv", n: int = 30):
    return load_trace(str(bundled_trace(name)), max_requests=n)


# ---- --slo in the table (issue 22 item 7) -----------------------------------------------------------
def test_slo_puts_request_goodput_and_attainment_in_the_table():
    tr = trace(n=20)
    slo = {"ttft": 200.0, "tpot": 50.0}
    runs = [run_simulation(tr, SimConfig(slo_ms=slo), spec, seed=0) for spec in ("none", "fixed:3")]
    frame = comparison_frame(runs, ["none", "fixed:3"])
    with_slo, without = io.StringIO(), io.StringIO()
    print_comparison(frame, "azure-conv", console=Console(width=250, file=with_slo), slo_ms=slo)
    plain = comparison_frame([run_simulation(tr, SimConfig(), spec, seed=0) for spec in ("none", "fixed:3")],
                             ["none", "fixed:3"])
    print_comparison(plain, "azure-conv", console=Console(width=250, file=without))
    text = with_slo.getvalue()
    assert "goodput req/s" in text and "SLO met" in text and "ttft <= 200 ms, tpot <= 50 ms" in text
    row = next(line for line in text.splitlines() if line.startswith("│ fixed:3 "))
    assert f"{frame.loc[1, 'request_goodput']:.2f}" in row and f"{frame.loc[1, 'slo_attainment']:.1%}" in row
    assert "goodput" not in without.getvalue() and "SLO" not in without.getvalue()


def test_slo_columns_survive_an_80_column_terminal(capsys):
    from specdec_sim.simulator.cli import main

    assert main(["--trace", "sharegpt", "--max-requests", "20", "--policy", "none", "--policy", "fixed:3",
                 "--slo", "ttft:200,tpot:50", "--quiet"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("┃ policy"))
    assert "goodput" in header and "SLO" in header


# ---- failure reasons by kind (issue 22 item 5) ------------------------------------------------------
def test_failure_warning_names_each_reason_once_with_its_count_not_per_prompt_length():
    tr = trace("mooncake-conv", 60)
    runs = [run_simulation(tr, SimConfig(max_model_len=4096), spec, seed=0) for spec in ("none", "fixed:3")]
    reasons = runs[0].requests.loc[runs[0].requests["status"] != "finished", "reason"]
    assert reasons.nunique() > 2  # one text per prompt length in requests.csv
    lines = failure_warnings(comparison_frame(runs, ["none", "fixed:3"]))
    failed = len(reasons)
    assert lines[0] == (f"warning: none: {failed} of 60 requests failed ({failed} prompt + max_tokens over "
                        f"max_model_len 4096)")


def test_failure_reasons_count_each_kind_and_the_rest_together():
    from specdec_sim.simulator.report import failure_reasons

    rows = (["prompt of 9000 tokens + max_tokens 0 exceeds max_model_len 8192"] * 2
            + ["prompt of 12000 tokens + max_tokens 5 exceeds max_model_len 8192"]
            + ["needs more KV-cache blocks than the replica has"] * 2 + ["a", "b", "c", ""])
    requests = pd.DataFrame({"status": "failed", "reason": rows})
    assert failure_reasons(requests) == ("3 prompt + max_tokens over max_model_len 8192; 2 needs more KV-cache "
                                         "blocks than the replica has; 1 a; 1 b; 2 for 2 other reasons")

"""The validation report against published GPU measurements (benchmarks/validate_published.py, issue 9).

The done-when tolerances of issue 9, asserted for the shipped calibrations they name; every published
number below is written out with its source, independently of the report's data file (which a test
checks against them). A check is skipped, naming the calibration, only while that file is not shipped.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from specdec_sim.costmodel import available_calibrations

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "validate_published.py"
_spec = importlib.util.spec_from_file_location("validate_published", _PATH)
vp = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("validate_published", vp)  # dataclasses look their module up by name
_spec.loader.exec_module(vp)
vr = sys.modules["validation_report"]  # its siblings: records and output, the published figures
pp = sys.modules["published_points"]
vl = sys.modules["validate_load"]

# vLLM issue #20780 (ekagra-ranjan, 2025-07-10): Llama-3.1-8B-Instruct, vLLM V1, batch 1, MT-Bench;
# mean TPOT (ms) and acceptance length (bonus included) per k.
EAGLE1_TPOT_MS = {2: 4.37, 3: 4.29, 4: 4.48, 5: 4.71, 6: 4.94, 7: 5.20}
EAGLE1_AL = {2: 2.10, 3: 2.29, 4: 2.39, 5: 2.43, 6: 2.45, 7: 2.47}
EAGLE3_TPOT_MS = {2: 4.32, 3: 4.09, 4: 4.05, 5: 4.13, 6: 4.20, 7: 4.29}
EAGLE3_AL = {2: 2.36, 3: 2.79, 4: 3.08, 5: 3.32, 6: 3.46, 7: 3.54}
VANILLA_TPOT_MS = 7.07  # same issue, no speculation
# SpecDecode-Bench (arXiv 2601.11580) Fig.4, Llama-3.1-8B + EAGLE, k=3, H100, vLLM v0.10.1: % of run time in
# drafting, verification, rejection sampling, system overhead.
FIG4_8B_EAGLE = {1: (24.7, 62.8, 1.5, 11.0), 128: (9.7, 81.9, 0.4, 8.0)}
# vLLM PR #32374 (dynamic speculative decoding), example config batch_stats: per-step ITL (ms) of Llama-3.1-8B +
# EAGLE-1 at batch B x K drafted tokens, and the config's per-position acceptance.
PR32374_ITL = {1: (6.52, 7.37, 8.84, 10.33), 4: (6.60, 7.47, 8.98, 10.40), 16: (6.90, 7.85, 9.52, 11.20),
               64: (7.77, 9.66, 13.50, 16.83), 256: (14.49, 27.14, 41.85, 57.40)}
PR32374_RATES = (0.681, 0.391, 0.204, 0.101, 0.051)
PR32374_BEST_K = {1: 3, 4: 3, 16: 3, 64: 1, 256: 0}  # what the cells give with the PR's rule (derived here)

EAGLE1, EAGLE3 = "llama3.1-8b-eagle-h100", "llama3.1-8b-eagle3-h100"
CAL_70B = ("llama3-70b-tp4-ngram-h100", "llama3-70b-tp4-eagle-h100", "llama3-70b-tp4-draft1b-h100")
ROLE_70B = {"llama3-70b-tp4-ngram-h100": "70b-ngram", "llama3-70b-tp4-eagle-h100": "70b-eagle",
            "llama3-70b-tp4-draft1b-h100": "70b-draft"}


def need(name: str) -> None:
    if name not in available_calibrations():
        pytest.skip(f"calibration {name} is not shipped yet")


@pytest.fixture(scope="module")
def points() -> dict:
    return vp.load_points()


def run_section(section, points, role: str, name: str, **kwargs) -> vr.Report:
    report = vr.Report()
    cals = vp.resolve_calibrations({role: name})
    section(points, cals, vp.Options(overrides={role: name}, **kwargs), report)
    return report


def test_data_file_holds_the_published_numbers(points):
    for k in vp.KS:
        assert points[(f"tpot_vs_k/eagle1/k={k}", "mean_tpot")] == EAGLE1_TPOT_MS[k]
        assert points[(f"tpot_vs_k/eagle1/k={k}", "acceptance_length")] == EAGLE1_AL[k]
        assert points[(f"tpot_vs_k/eagle3/k={k}", "mean_tpot")] == EAGLE3_TPOT_MS[k]
        assert points[(f"tpot_vs_k/eagle3/k={k}", "acceptance_length")] == EAGLE3_AL[k]
    assert points[("batch1/vllm20780-vanilla", "mean_tpot")] == VANILLA_TPOT_MS
    for batch, shares in FIG4_8B_EAGLE.items():
        parts = ("draft", "verify", "sample", "overhead")
        got = tuple(points[(f"fig4/8b-eagle/B={batch}", f"{p}_share")] for p in parts)
        assert got == shares
    for b, row in PR32374_ITL.items():
        assert tuple(points[(f"load/vllm32374/B={b}/K={k}", "itl")] for k in (0, 1, 3, 5)) == row
    assert vl.pr_rates(points) == PR32374_RATES
    assert {b: vl.table_best(points, PR32374_RATES, b) for b in PR32374_ITL} == PR32374_BEST_K


def _tpot_rows(head: str, name: str, points, sim_requests: int = 50) -> tuple[dict, dict]:
    report = vr.Report()
    role = "8b-eagle" if head == "eagle1" else "8b-eagle3"
    cal = vp.resolve_calibrations({role: name})[role]
    vp.tpot_vs_k(points, head, role, cal, vp.Options(sim_requests=sim_requests), report)
    closed = {int(r.setting.rsplit("=", 1)[1]): r.predicted for r in report.rows if r.metric == "mean TPOT [closed]"}
    sim = {int(r.setting.rsplit("=", 1)[1]): r.predicted for r in report.rows if r.metric == "mean TPOT [sim]"}
    return closed, sim


def _mae_pct(predicted: dict, measured: dict) -> float:
    return float(np.mean([abs(predicted[k] / measured[k] - 1) * 100 for k in measured]))


@pytest.mark.parametrize("head, name, measured, best_k", [
    ("eagle1", EAGLE1, EAGLE1_TPOT_MS, 3), ("eagle3", EAGLE3, EAGLE3_TPOT_MS, 4)])
def test_batch1_tpot_vs_k_within_5_percent_and_best_k(points, head, name, measured, best_k):
    """Done when: batch-1 TPOT for k = 2..7 within 5 % MAE of #20780, best k 3 (EAGLE-1) and 4 (EAGLE-3)."""
    need(name)
    closed, sim = _tpot_rows(head, name, points)
    assert _mae_pct(closed, measured) <= 5.0
    assert _mae_pct(sim, measured) <= 5.0
    assert min(closed, key=closed.get) == best_k


def test_simulated_batch1_tpot_follows_the_closed_form(points):
    """The simulator at batch 1 under fixed:k gives step time / AL within 3 % (acceptance drawn, not set)."""
    closed, sim = _tpot_rows("eagle1", "turbospec-llama3-8b-eagle-h100", points)
    assert all(abs(sim[k] / closed[k] - 1) < 0.03 for k in vp.KS)


def test_report_flags_the_turbospec_fit_it_is_known_to_miss(points):
    """The TurboSpec authors' 8B fit prices an EAGLE-3-accepted step too cheaply (issue 9: MAE 23 % at 1k context;
    13 % at the 384-token MT-Bench context issue 20 reads #20780 at)."""
    report = vr.Report()
    cal = vp.resolve_calibrations({"8b-eagle3": "turbospec-llama3-8b-eagle-h100"})["8b-eagle3"]
    vp.tpot_vs_k(points, "eagle3", "8b-eagle3", cal, vp.Options(sim_requests=5), report)
    mae = {c.name: c for c in report.checks}["eagle3 batch-1 TPOT MAE <= 5 % (closed)"]
    assert not mae.passed
    assert float(mae.detail.split("MAE ")[1].split(" %")[0]) > 10.0


@pytest.mark.parametrize("batch", sorted(FIG4_8B_EAGLE))
def test_fig4_8b_eagle_shares_within_5_points(points, batch):
    """Done when: draft/verify/overhead shares at batch 1 and 128 for 8B EAGLE within 5 percentage points
    (Fig.4's rejection-sampling share counted as overhead)."""
    need(EAGLE1)
    report = run_section(vp.fig4_shares, points, "8b-eagle", EAGLE1)
    rows = {r.metric: r.predicted for r in report.rows if r.setting == f"fig4/8b-eagle/B={batch}"}
    draft, verify, sample, overhead = FIG4_8B_EAGLE[batch]
    assert abs(rows["share [draft]"] - draft) <= 5.0
    assert abs(rows["share [verify]"] - verify) <= 5.0
    assert abs(rows["share [overhead]"] - (overhead + sample)) <= 5.0
    assert sum(rows.values()) == pytest.approx(100.0)


def test_pr32374_cells_within_5_percent_and_best_k_per_batch(points):
    """Done when (issue 20): #32374's 20 cells within 5 % MAPE and the goodput-best K at batch 1/4/16/64/256 equal to
    the one the measured cells give; the schedule stops speculating within 20 % of the re-profiled batch (165)."""
    need(EAGLE1)
    report = run_section(vl.vllm32374, points, "8b-eagle", EAGLE1)
    checks = {c.name: c for c in report.checks}
    assert checks["#32374 per-step MAPE <= 5 %"].passed
    assert checks["#32374 best K equal at batch 1/4/16/64/256"].passed
    assert checks["#32374 schedule stops speculating within 20 % of the re-profiled batch"].passed
    best = {int(r.setting.rsplit("=", 1)[1]): r.predicted for r in report.rows if r.metric == "best K of 0,1,3,5"}
    assert best == PR32374_BEST_K


def test_schedule_is_read_off_best_k_by_batch():
    rows = vl.schedule(lambda b: 3 if b <= 10 else 1 if b <= 20 else 0, 30)
    assert rows == [(1, 10, 3), (11, 20, 1), (21, 30, 0)]
    assert vl.last_batch_with(rows, 1) == 20 and vl.last_batch_with(rows, 2) == 10 and vl.last_batch_with(rows, 4) == 0


def test_position_tokens_add_the_unconditional_rates():
    assert vl.position_tokens(PR32374_RATES, 0) == 1.0
    assert vl.position_tokens(PR32374_RATES, 3) == pytest.approx(1 + 0.681 + 0.391 + 0.204)


def test_context_direction_of_49986_and_the_dynamic_k_tax_of_49548(points):
    """#49986: at concurrency 256 static k = 3 gains with context; the shipped 70B draft calibration says so too.
    #49548: the calibrations' dynamic-k tax at batch 1, k = 2 is of the size the issue measured (+19 % step)."""
    need("llama3-70b-tp4-draft1b-h100")
    cals = vp.resolve_calibrations({})
    report = vr.Report()
    vl.context_direction(points, cals, report)
    vl.dynamic_k_tax(points, cals, vp.Options(), report)
    assert all(c.passed for c in report.checks)
    tax = [r.predicted for r in report.rows if r.metric == "step time added at batch 1, k=2"]
    assert tax and all(8.0 < t < 25.0 for t in tax)


@pytest.mark.parametrize("name", CAL_70B)
def test_70b_fixed_k_loses_to_no_speculation_at_large_batch(points, name):
    """Done when: with the 70B calibrations fixed k loses to no speculation once the batch is large."""
    need(name)
    report = run_section(vl.seventy_b_fixed_vs_none, points, ROLE_70B[name], name)
    ratios = {int(r.setting.rsplit("=", 1)[1]): r.predicted for r in report.rows
              if r.metric == "step tok/s ratio k=3/none"}
    assert ratios[1] > 1.0  # speculation wins at batch 1 (every batch-1 measurement)
    assert ratios[max(ratios)] < 1.0


def test_crossover_is_the_batch_from_which_fixed_k_stays_slower():
    assert vp.crossover_batch(lambda b: 2.0 - b / 100, 256) == 101
    assert vp.crossover_batch(lambda b: 1.5, 256) is None
    assert vp.crossover_batch(lambda b: 0.9 if b < 10 or b > 200 else 1.1, 256) == 201


def test_markdown_block_keeps_the_hand_written_text():
    text = f"# Validation\n\nintro\n\n{vr.BEGIN}\nold table\n{vr.END}\n\n## Weak points\nkept\n"
    out = vr.replace_block(text, "new table")
    assert "old table" not in out and "new table" in out and out.endswith("## Weak points\nkept\n")
    assert vr.replace_block("", "t") == f"{vr.BEGIN}\nt\n{vr.END}\n"


def test_quick_run_end_to_end_writes_csv_json_and_markdown(tmp_path, capsys):
    md = tmp_path / "validation.md"
    md.write_text("# Validation\n\nhand-written\n", encoding="utf-8")
    assert vp.main(["--quick", "--out", str(tmp_path / "out"), "--markdown", str(md)]) == 0
    with open(tmp_path / "out" / "validation.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["section"][0] for r in rows} >= {"1", "2", "3", "4", "5"}
    payload = json.loads((tmp_path / "out" / "validation.json").read_text(encoding="utf-8"))
    assert payload["checks"] and len(payload["rows"]) == len(rows)
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# Validation\n\nhand-written\n") and vr.BEGIN in text and "| done-when check |" in text
    assert "checks pass" in capsys.readouterr().out


def test_check_exits_1_when_a_tolerance_fails(tmp_path):
    """The TurboSpec 8B fit as the EAGLE-3 calibration misses #20780 by ~23 %: --check fails the run."""
    argv = ["--quick", "--calibration", "8b-eagle3=turbospec-llama3-8b-eagle-h100", "--check"]
    assert vp.main(argv) == 1
    assert vp.main(argv[:-1]) == 0


@pytest.mark.parametrize("argv, fragment", [
    (["--calibration", "9b-eagle=turbospec-llama3-8b-eagle-h100"], "unknown role '9b-eagle'"),
    (["--calibration", "8b-eagle"], "expected ROLE=NAME|PATH"),
    (["--calibration", "8b-eagle=no-such-calibration"], "--calibration 8b-eagle=no-such-calibration"),
    (["--context", "0"], "--context 0"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_options_are_one_line_and_exit_2(capsys, argv, fragment):
    assert vp.main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_unwritable_outputs_are_refused_before_running(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    assert vp.main(["--quick", "--out", str(blocker)]) == 2
    assert vp.main(["--quick", "--markdown", str(tmp_path / "no-such-dir" / "v.md")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 2 and "--out" in captured.err


def test_bad_data_file_names_the_line_and_column(tmp_path):
    bad = tmp_path / "points.csv"
    bad.write_text(",".join(pp.COLUMNS) + "\nfig4/x/B=1,src,draft_share,abc,%,\n", encoding="utf-8")
    with pytest.raises(vp.ValidationError, match=r"line 2, column value: 'abc'"):
        vp.load_points(bad)
    bad.write_text("setting,value\n", encoding="utf-8")
    with pytest.raises(vp.ValidationError, match="header must be"):
        vp.load_points(bad)


BUILDER_COPY = Path(__file__).resolve().parents[1] / "profiler" / "data" / "published_measurements.csv"


def test_report_and_builder_copies_agree_on_shared_numbers(points):
    """The calibration builder's copy of the same sources (profiler/data) holds the same #20780, Fig.4, PR #32374
    and #12101 figures as the report's (Fig.4 overhead there already includes rejection sampling)."""
    if not BUILDER_COPY.exists():
        pytest.skip(f"{BUILDER_COPY.name} is not in the project yet")
    import pandas as pd
    shared = 0
    for row in pd.read_csv(BUILDER_COPY).itertuples():
        if row.set == "vllm20780_vanilla":
            assert points[("batch1/vllm20780-vanilla", "mean_tpot")] == row.value
        elif row.set in ("vllm20780_eagle", "vllm20780_eagle3"):
            setting = f"tpot_vs_k/{'eagle1' if row.proposer == 'eagle' else 'eagle3'}/k={int(row.k)}"
            assert (points[(setting, "mean_tpot")], points[(setting, "acceptance_length")]) == (
                row.value, row.acceptance_length)
        elif row.set.startswith("fig4_"):
            setting, part = f"fig4/{row.set[5:].replace('_', '-')}/B={int(row.batch)}", row.metric.split("_")[1]
            value = points[(setting, f"{part}_share")]
            value += points[(setting, "sample_share")] if part == "overhead" else 0.0
            assert value == pytest.approx(row.value, abs=1e-9), (setting, part)
        elif row.set == "vllm32374_itl":
            assert points[(f"load/vllm32374/B={int(row.batch)}/K={int(row.k)}", "itl")] == row.value
        elif row.set == "vllm32374_best_k":
            assert vl.table_best(points, PR32374_RATES, int(row.batch)) == row.value
        elif row.set == "vllm12101_70b_vanilla":  # derived in both: 257 gaps there, 257.06 here
            assert points[("batch1/vllm12101-70b-vanilla", "mean_tpot_derived")] == pytest.approx(row.value, rel=1e-3)
        else:
            continue
        shared += 1
    assert shared >= 13 + 48 + 20 + 5

"""Load mechanics of a step: the dynamic-k tax, per-request and per-row host costs, and how the engine decides who
pays the tax (V0 batch expansion and eager forwards: test_v0_mechanics.py).

Closed form wherever the cost model is a formula: each expected time is computed here from the calibration's
own fields and compared with what `CostModel` returns, so a change of either side fails a test. The engine
tests run a few seeded, tiny simulations (no clock decides anything).
"""
from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from specdec_sim import SimConfig, Trace, run_simulation
from specdec_sim.costmodel import (Calibration, CalibrationError, CostModel, load_calibration, prefill_terms,
                                   step_shape)
from specdec_sim.costmodel.calibration import CALIBRATION_DIR, as_era
from specdec_sim.policies import make_policy
from specdec_sim.policies.base import FixedK, NoSpeculation
from specdec_sim.simulator.cli import main as simulate
from specdec_sim.simulator.engine import pays_piecewise_tax, varies_k
from specdec_sim.simulator.engine_mode import resolve_limits
from specdec_sim.simulator.prepared import engine_warnings, priced_for_style

from conftest import HEADER, assert_one_line_error, edited_json, write

EAGLE_8B = "llama3.1-8b-eagle-h100"  # V1, sequential drafter: its draft time does not depend on the target's
NGRAM_70B = "llama3-70b-tp4-ngram-h100"  # V1, prompt lookup priced as a fraction of the target
NGRAM_70B_V0 = "llama3-70b-tp4-ngram-h100-v0"
NGRAM_8B_V0 = "llama3.1-8b-ngram-h100-v0"
DRAFT_8B_V0 = "llama3.1-8b-draft1b-h100-v0"
V0_CALS = (NGRAM_70B_V0, NGRAM_8B_V0, DRAFT_8B_V0)
EPS_MS = 1e-9


@cache
def priced(name: str) -> Calibration:
    """A shipped calibration as the engine prices it (n-gram files with their n-gram drafting rule)."""
    return priced_for_style(load_calibration(name), "ngram" if "ngram" in name else "draft")


def shape(batch: int, k: int, context: int = 700, prefill: tuple[tuple[int, int], ...] = ()):
    return step_shape([k] * batch, batch * context, prefill_terms(prefill))


def tiny_trace(n: int = 8, seed: int = 5) -> Trace:
    """n requests all sent at t=0 (the schedule then depends on step counts only, not on step times)."""
    rng = np.random.default_rng(seed)
    return Trace(request_id=np.arange(n), arrival_s=np.zeros(n), prompt_tokens=rng.integers(20, 200, n),
                 output_tokens=rng.integers(10, 80, n), source="test_load_mechanics")


def speculating_steps(steps: pd.DataFrame) -> int:
    return int((steps["k_max"] > 0).sum())


# ---- the dynamic-k tax in the cost model ------------------------------------------------------------------

TAX_SHAPES = {
    "decode k=0": shape(16, 0),
    "decode k=3": shape(16, 3),
    "mixed ks": step_shape([0, 1, 5, 2], 4 * 900),
    "prefill only": shape(0, 0, prefill=((512, 0),)),
    "decode k=2 + prefill chunk": shape(8, 2, prefill=((256, 128),)),
}


@pytest.mark.parametrize("name", [EAGLE_8B, NGRAM_70B])
@pytest.mark.parametrize("label", list(TAX_SHAPES))
def test_dynamic_k_tax_adds_exactly_the_calibration_rates_to_the_target_forward(name, label):
    """With dynamic_k=True the target forward costs dynamic_k_tax_ms more in every step and dynamic_k_tax_spec_ms
    more again in a step that speculates (max_k > 0); dynamic_k_tax_ms(shape) reports exactly that, and a static
    model reports and charges nothing."""
    cal, s = priced(name), TAX_SHAPES[label]
    assert cal.dynamic_k_tax_ms > 0 and cal.dynamic_k_tax_spec_ms > 0  # the shipped V1 files carry a tax
    dynamic, static = CostModel(cal, dynamic_k=True), CostModel(cal, dynamic_k=False)
    expected = cal.dynamic_k_tax_ms + (cal.dynamic_k_tax_spec_ms if s.max_k > 0 else 0.0)
    assert dynamic.target_ms(s) - static.target_ms(s) == pytest.approx(expected, abs=EPS_MS)
    assert dynamic.dynamic_k_tax_ms(s) == pytest.approx(expected, abs=EPS_MS)
    assert static.dynamic_k_tax_ms(s) == 0.0
    assert dynamic.dynamic_k and not static.dynamic_k


@pytest.mark.parametrize("k", [0, 1, 4])
def test_dynamic_k_tax_is_the_whole_step_difference_for_a_sequential_drafter(k):
    """For a calibration whose draft and overhead do not scale with the target time (EAGLE, overhead_fraction 0)
    the tax is the only difference between the dynamic and the static step: draft and overhead seconds are equal."""
    cal = priced(EAGLE_8B)
    assert cal.overhead_fraction == 0.0 and cal.draft.kind == "sequential"
    s = shape(32, k, context=1200)
    dyn, sta = CostModel(cal, dynamic_k=True).step_time(s), CostModel(cal).step_time(s)
    expected_s = (cal.dynamic_k_tax_ms + (cal.dynamic_k_tax_spec_ms if k else 0.0)) / 1000.0
    assert dyn.total_s - sta.total_s == pytest.approx(expected_s, abs=1e-12)
    assert dyn.draft_s == sta.draft_s and dyn.overhead_s == sta.overhead_s


def test_a_per_speculating_step_tax_alone_is_charged():
    """A calibration may state only the per-speculating-step part of the tax (dynamic_k_tax_ms 0): a dynamic
    speculating step must still cost that much more, as dynamic_k_tax_ms(shape) says it does."""
    cal = replace(priced(EAGLE_8B), dynamic_k_tax_ms=0.0, dynamic_k_tax_spec_ms=1.0)
    s = shape(4, 3)
    dynamic, static = CostModel(cal, dynamic_k=True), CostModel(cal)
    assert dynamic.dynamic_k_tax_ms(s) == pytest.approx(1.0)
    assert dynamic.target_ms(s) - static.target_ms(s) == pytest.approx(1.0)


# ---- per-request and per-row host costs --------------------------------------------------------------------

def test_overhead_is_per_step_per_sequence_per_row_and_per_drafting_request():
    """overhead = step_overhead + per_request * sequences + sampling_row * (verify tokens + prefills), and in a
    speculating step + overhead_fraction * target + overhead_fixed + spec_per_request * drafting requests
    (checked with every term non-zero, on a mixed step with a prefill chunk and on a plain decode step)."""
    cal = replace(priced(NGRAM_70B), overhead_fraction=0.03, overhead_fixed_ms=0.2, per_request_ms=0.01,
                  sampling_row_ms=0.002, spec_per_request_ms=0.05, step_overhead_ms=0.7)
    cost = CostModel(cal)
    mixed = step_shape([0, 2, 5, 1], 4 * 800, prefill_terms([(128, 0), (64, 32)]))
    t = cost.target_ms(mixed)
    seqs, rows, drafting = 4 + 2, (4 + 8) + 2, 3
    expected = (0.7 + 0.01 * seqs + 0.002 * rows + 0.03 * t + 0.2 + 0.05 * drafting)
    assert cost.overhead_ms(mixed, t) == pytest.approx(expected, abs=EPS_MS)
    plain = shape(10, 0)
    assert cost.overhead_ms(plain, cost.target_ms(plain)) == pytest.approx(0.7 + 0.01 * 10 + 0.002 * 10, abs=EPS_MS)


def test_v0_charges_per_request_host_cost_on_the_expanded_sequences():
    """V0's host work is per scored sequence: B*(k+1) sequences and rows, plus verification per drafting request."""
    cal = priced(NGRAM_70B_V0)
    cost, batch, k = CostModel(cal), 12, 3
    s = shape(batch, k)
    n = batch * (k + 1)
    expected = (cal.step_overhead_ms + cal.per_request_ms * n + cal.sampling_row_ms * n
                + cal.spec_per_request_ms * batch)
    assert cost.overhead_ms(s, cost.target_ms(s)) == pytest.approx(expected, abs=EPS_MS)


def test_legacy_era_prices_speculation_with_its_own_per_request_cost():
    """as_era(cal, 'legacy') swaps spec_per_request_ms for legacy_spec_per_request_ms (nothing else); the overhead
    of a speculating step then moves by exactly (legacy - current) per drafting request; 'current' is the file."""
    cal = priced(EAGLE_8B)
    legacy = as_era(cal, "legacy")
    assert as_era(cal, "current") is cal
    assert legacy.spec_per_request_ms == cal.legacy_spec_per_request_ms != cal.spec_per_request_ms
    assert replace(legacy, spec_per_request_ms=cal.spec_per_request_ms) == cal
    s = step_shape([3, 0, 2, 4, 1], 5 * 600)
    t = CostModel(cal).target_ms(s)
    diff = CostModel(legacy).overhead_ms(s, t) - CostModel(cal).overhead_ms(s, t)
    assert diff == pytest.approx((cal.legacy_spec_per_request_ms - cal.spec_per_request_ms) * 4, abs=EPS_MS)


# ---- who pays the tax ----------------------------------------------------------------------------------------

VARYING = ("smartspec", "goodput-greedy", "turbospec", "vllm-disable")
STATIC = ("none", "fixed:3", "fixed:0")


def test_static_policies_declare_that_their_k_never_varies():
    """NoSpeculation and FixedK say varies_k = False; every goodput/adaptive policy varies k (the default True)."""
    assert NoSpeculation.varies_k is False and FixedK.varies_k is False
    for spec in STATIC:
        assert not varies_k(make_policy(spec)), spec
    for spec in VARYING:
        assert varies_k(make_policy(spec)), spec


def test_a_foreign_policy_varies_k_unless_it_says_a_boolean_false():
    """A policy object without `varies_k`, or with a non-boolean one, is taken to vary k (the safe side: it pays)."""
    class Quiet:
        name = "quiet"

        def propose(self, batch):
            return [1] * len(batch.requests)

        def observe(self, outcome):
            pass

    assert varies_k(Quiet())
    static = Quiet()
    static.varies_k = False
    assert not varies_k(static)
    odd = Quiet()
    odd.varies_k = "no"
    assert varies_k(odd)


@pytest.mark.parametrize("engine", ["v1", "v0"])
@pytest.mark.parametrize("cuda_graphs", ["auto", "full", "piecewise"])
@pytest.mark.parametrize("spec", STATIC + VARYING)
def test_pays_piecewise_tax_truth_table(engine, cuda_graphs, spec):
    """piecewise: always; full: never; auto: only on V1 and only for a policy whose k varies."""
    expected = cuda_graphs == "piecewise" or (cuda_graphs == "auto" and engine == "v1" and spec in VARYING)
    assert pays_piecewise_tax(cuda_graphs, make_policy(spec), engine) is expected


TAX_KEYS = ("cuda_graphs", "dynamic_k_tax_charged", "dynamic_k_tax_ms_per_step",
            "dynamic_k_tax_ms_per_speculating_step", "dynamic_k_tax_total_s")


def check_tax_keys(summary: dict, steps: pd.DataFrame, cal: Calibration, charged: bool) -> None:
    """summary.json's tax keys: present, consistent with whether it was charged and with the step log."""
    for key in TAX_KEYS:
        assert key in summary, key
    assert summary["dynamic_k_tax_charged"] is charged
    graphs = "piecewise" if charged else "full"
    if cal.cuda_graph_max_batch:  # V0: captured up to a batch size
        graphs += f" up to {cal.cuda_graph_max_batch} sequences, eager beyond"
    assert summary["cuda_graphs"] == graphs
    assert summary["dynamic_k_tax_ms_per_step"] == cal.dynamic_k_tax_ms
    assert summary["dynamic_k_tax_ms_per_speculating_step"] == cal.dynamic_k_tax_spec_ms
    assert summary["num_steps"] == len(steps)
    expected_s = (cal.dynamic_k_tax_ms * len(steps) + cal.dynamic_k_tax_spec_ms * speculating_steps(steps)) / 1000.0
    assert summary["dynamic_k_tax_total_s"] == pytest.approx(expected_s if charged else 0.0, rel=1e-12, abs=0.0)


@pytest.mark.parametrize("cuda_graphs", ["auto", "full", "piecewise"])
@pytest.mark.parametrize("spec", ["none", "fixed:3", "smartspec", "goodput-greedy"])
def test_v1_run_charges_the_tax_as_the_truth_table_says(spec, cuda_graphs):
    """On a V1 calibration: fixed:3 and none pay nothing under auto and full, smartspec and goodput-greedy pay under
    auto and piecewise, everyone pays under piecewise; dynamic_k_tax_total_s = (per-step rate x steps + per-
    speculating-step rate x speculating steps) / 1000, counted from the run's own step log, and > 0 when charged."""
    cal = load_calibration(EAGLE_8B)
    result = run_simulation(tiny_trace(), SimConfig(calibration=EAGLE_8B, cuda_graphs=cuda_graphs), spec, seed=3)
    charged = cuda_graphs == "piecewise" or (cuda_graphs == "auto" and spec in ("smartspec", "goodput-greedy"))
    check_tax_keys(result.summary, result.steps, cal, charged)
    assert result.summary["engine"] == "v1"
    assert (result.summary["dynamic_k_tax_total_s"] > 0) is charged
    if spec != "none" and charged:
        assert speculating_steps(result.steps) > 0  # the per-speculating-step part is exercised too


def test_piecewise_run_is_the_full_run_plus_the_tax_on_every_step():
    """fixed:3 with every request sent at t=0 schedules the same steps whatever the step times: the piecewise run's
    step log has the full run's shapes and acceptances, each verify time larger by the tax of that step (per step,
    plus per speculating step), and the extra busy time sums to summary's dynamic_k_tax_total_s."""
    cal = load_calibration(EAGLE_8B)
    runs = {cg: run_simulation(tiny_trace(12), SimConfig(calibration=EAGLE_8B, cuda_graphs=cg), "fixed:3", seed=2)
            for cg in ("full", "piecewise")}
    full, piece = runs["full"].steps, runs["piecewise"].steps
    same = ["num_decode", "num_prefill", "prefill_tokens", "verify_tokens", "kv_tokens", "k_max", "proposed",
            "accepted", "emitted"]
    pd.testing.assert_frame_equal(full[same], piece[same])
    tax_s = (cal.dynamic_k_tax_ms + cal.dynamic_k_tax_spec_ms * (piece["k_max"] > 0)) / 1000.0
    np.testing.assert_allclose(piece["verify_s"] - full["verify_s"], tax_s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(piece["step_time_s"] - full["step_time_s"], tax_s, rtol=0, atol=1e-12)
    extra = piece["step_time_s"].sum() - full["step_time_s"].sum()
    assert runs["piecewise"].summary["dynamic_k_tax_total_s"] == pytest.approx(extra, rel=1e-9)
    assert runs["full"].summary["dynamic_k_tax_total_s"] == 0.0


def test_v0_never_charges_the_tax_under_auto_even_with_a_taxed_calibration():
    """V0 captured decode graphs per batch size whatever k was: under auto even smartspec pays nothing on V0 (a V0
    calibration given a non-zero tax here, so a wrongly charged run would show it); piecewise forces it."""
    cal = replace(priced(NGRAM_8B_V0), dynamic_k_tax_ms=0.5, dynamic_k_tax_spec_ms=0.25)
    for cg, charged in (("auto", False), ("full", False), ("piecewise", True)):
        config = SimConfig(calibration=NGRAM_8B_V0, style="ngram", cuda_graphs=cg, policy_calibration="same")
        result = run_simulation(tiny_trace(), config, "smartspec", seed=1, calibration=cal)
        assert result.summary["engine"] == "v0"
        check_tax_keys(result.summary, result.steps, cal, charged)
        assert (result.summary["dynamic_k_tax_total_s"] > 0) is charged


def test_forcing_v0_on_a_v1_calibration_drops_the_auto_tax_and_warns():
    """--engine v0 on a V1 calibration: smartspec under auto is not charged (V0 graphs), and the prepared engine
    carries a one-line warning that the V1 file lacks V0's batch expansion."""
    config = SimConfig(calibration=EAGLE_8B, engine="v0")
    result = run_simulation(tiny_trace(), config, "smartspec", seed=1)
    assert result.summary["engine"] == "v0"
    assert result.summary["dynamic_k_tax_charged"] is False and result.summary["dynamic_k_tax_total_s"] == 0.0
    cal = load_calibration(EAGLE_8B)
    (warning,) = engine_warnings(resolve_limits(config, cal), cal)
    assert "--engine v0" in warning and "batch-expansion" in warning and "\n" not in warning


@pytest.mark.parametrize("name, engine, seqs", [(NGRAM_70B_V0, "v0", 256), (NGRAM_8B_V0, "v0", 256),
                                                (EAGLE_8B, "v1", 1024), (NGRAM_70B, "v1", 1024)])
def test_engine_auto_takes_the_calibrations_engine(name, engine, seqs):
    """--engine auto (the default) models the engine the calibration describes, with that engine's batch limit
    (V0 256 sequences; V1 on an H100 1024) and no mismatch warning."""
    cal = load_calibration(name)
    assert SimConfig().engine == "auto"
    limits = resolve_limits(SimConfig(calibration=name), cal)
    assert (limits.engine, limits.max_num_seqs) == (engine, seqs)
    assert engine_warnings(limits, cal) == ()


# ---- the command line ----------------------------------------------------------------------------------------

def test_simulate_end_to_end_with_piecewise_graphs(tmp_path: Path, capsys):
    """simulate on a 4-request trace with --cuda-graphs piecewise: both policies (even none and fixed:3) are charged;
    summary.json's tax keys agree with steps.parquet, and the run's config records the option."""
    trace = write(tmp_path, "tiny.csv", HEADER + "0,0.0,64,40\n1,0.01,80,30\n2,0.02,50,60\n3,0.5,100,20\n")
    out = tmp_path / "out"
    code = simulate(["--trace", str(trace), "--policy", "fixed:3", "--policy", "none", "--calibration", EAGLE_8B,
                     "--cuda-graphs", "piecewise", "--seed", "7", "--out", str(out), "--quiet"])
    assert code == 0
    capsys.readouterr()
    cal = load_calibration(EAGLE_8B)
    for slug in ("fixed_3", "none"):
        summary = json.loads((out / slug / "summary.json").read_text())
        steps = pd.read_parquet(out / slug / "steps.parquet")
        check_tax_keys(summary, steps, cal, charged=True)
        assert summary["config"]["cuda_graphs"] == "piecewise"
        assert summary["completed"] == 4
        assert (speculating_steps(steps) > 0) is (slug == "fixed_3")


@pytest.mark.parametrize("value", ["sometimes", "FULL", ""])
def test_bad_cuda_graphs_value_is_one_line_and_exit_2(value, capsys):
    """--cuda-graphs takes auto, full or piecewise; anything else is refused before any run, one line, exit 2."""
    with pytest.raises(SystemExit) as exit_:
        simulate(["--trace", "sharegpt", "--max-requests", "3", "--quiet", "--cuda-graphs", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--cuda-graphs" in lines[0] and "piecewise" in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("field, value, needle", [
    ("engine", "v2", "engine must be one of v1, v0, not 'v2'"),
    ("engine", 1, "engine must be a string"),
    ("scorer", "tree", "scorer must be one of mqa, batch_expansion, not 'tree'"),
    ("scorer", None, "scorer must be a string"),
])
def test_calibration_with_a_bad_engine_or_scorer_is_refused_in_one_line(tmp_path: Path, capsys, field, value, needle):
    """A calibration JSON whose engine or scorer is not a known value (or not a string) is refused by
    load_calibration with one line naming the file and the field, and simulate exits 2 with that line."""
    data = json.loads((CALIBRATION_DIR / f"{NGRAM_8B_V0}.json").read_text())
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(edited_json(data, field, value)))
    with pytest.raises(CalibrationError) as excinfo:
        load_calibration(path)
    assert_one_line_error(excinfo, str(path), needle)
    code = simulate(["--trace", "sharegpt", "--max-requests", "3", "--quiet", "--calibration", str(path),
                     "--out", str(tmp_path / "out")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]

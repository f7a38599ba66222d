"""Truth versus belief: the policies' fitted linear view, --policy-calibration, step-time noise, and the
cost-model terms added for measured hardware (per-step overhead, drafter passes over the step's tokens)."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from specdec_sim.costmodel import (Calibration, CostModel, DraftCost, ForwardCoefficients, StepTime,
                                   calibration_from_dict, load_calibration, step_shape, uniform_shape)
from specdec_sim.costmodel.calibration import CalibrationError, provenance_line
from specdec_sim.costmodel.policy_view import ProfileGrid, fitted_policy_view, profile_shapes
from specdec_sim.costmodel.model import PrefillTerms
from specdec_sim.simulator.step_noise import StepTimeNoise

KNEE = ForwardCoefficients(fixed_ms=6.0, per_kv_token_ms=4e-5, knee_tokens=128.0, after_knee_ms=0.024)
HEAD = ForwardCoefficients(fixed_ms=0.7, per_kv_token_ms=1e-6, knee_tokens=100.0, after_knee_ms=0.0025)


def knee_calibration(**changes) -> Calibration:
    base = Calibration(name="knee", target=KNEE, step_overhead_ms=1.2, overhead_fixed_ms=0.5,
                       draft=DraftCost(kind="sequential", forward=HEAD, first_pass="step_tokens"))
    return replace(base, **changes)


# ---- cost-model terms ---------------------------------------------------------------------------------

def test_step_overhead_is_charged_on_every_step_and_speculation_adds_its_own():
    cost = CostModel(knee_calibration())
    plain = cost.step_time(uniform_shape(4, 4000, 0))
    spec = cost.step_time(uniform_shape(4, 4000, 3))
    assert plain.overhead_s == pytest.approx(1.2e-3)
    assert spec.overhead_s == pytest.approx(1.7e-3)
    assert plain.draft_s == 0.0


def test_first_draft_pass_runs_over_every_token_of_the_step_then_one_per_drafting_request():
    cost = CostModel(knee_calibration())
    b, ctx, k = 8, 8 * 500, 3
    got = cost.step_time(uniform_shape(b, ctx, k)).draft_s * 1e3
    first = HEAD.forward_ms(b * (k + 1), ctx, b)  # verify tokens: k + 1 per request
    later = 2 * HEAD.forward_ms(b, ctx / b * b, b)
    assert got == pytest.approx(first + later)


def test_drafter_prefills_prompts_only_in_runs_that_speculate():
    cal = knee_calibration()
    prefill_only = step_shape([], 0, PrefillTerms(tokens=2048, chunks=1))
    assert CostModel(cal).step_time(prefill_only).draft_s == pytest.approx(HEAD.forward_ms(2048, 0, 1) / 1e3)
    assert CostModel(cal, drafter=False).step_time(prefill_only).draft_s == 0.0


def test_a_tree_drafts_in_one_pass_over_all_its_nodes():
    cost = CostModel(knee_calibration())
    shape = step_shape([4, 4], 2000, tree=True)  # two requests, four nodes each
    assert shape.max_k == 1
    assert cost.step_time(shape).draft_s * 1e3 == pytest.approx(HEAD.forward_ms(10, 2000, 2))


def test_old_calibration_files_keep_their_prices():
    """Files without step_overhead_ms / first_pass price exactly as before: overhead only when speculating."""
    cal = load_calibration("turbospec-llama3-8b-eagle-h100")
    assert cal.step_overhead_ms == 0.0 and cal.draft.first_pass == "drafting"
    assert CostModel(cal).step_time(uniform_shape(4, 4000, 0)).overhead_s == 0.0


@pytest.mark.parametrize("key, value, needle", [("step_overhead_ms", -1.0, "step_overhead_ms must be >= 0"),
                                                ("first_pass", "all", "draft.first_pass")])
def test_bad_new_fields_are_refused_in_one_line(key, value, needle):
    data = knee_calibration().to_dict()
    if key == "first_pass":
        data["draft"]["first_pass"] = value
    else:
        data[key] = value
    with pytest.raises(CalibrationError, match=needle) as err:
        calibration_from_dict(json.loads(json.dumps(data)), "x.json")
    assert "\n" not in str(err.value)


# ---- the policies' view -------------------------------------------------------------------------------

def test_view_of_a_linear_truth_is_the_truth():
    """The authors' own fits are lines in their features: refitting recovers them (to rounding)."""
    truth = load_calibration("turbospec-llama3-8b-eagle-h100")
    view = fitted_policy_view(truth)
    assert view.fit_error["policy_view"]["max_abs_pct"] < 1e-6
    for shape in profile_shapes(truth)[::17]:
        assert CostModel(view).step_time_s(shape) == pytest.approx(CostModel(truth).step_time_s(shape), rel=1e-9)


def test_view_of_a_knee_is_a_line_with_a_reported_error_and_positive_prices():
    truth = knee_calibration()
    view = fitted_policy_view(truth)
    assert view.target.after_knee_ms == 0.0 and view.draft.kind == "linear"
    err = view.fit_error["policy_view"]
    assert 0.5 < err["mape_pct"] < 30 and err["points"] == len(profile_shapes(truth))
    assert view.step_overhead_ms == truth.step_overhead_ms and view.overhead_fixed_ms == truth.overhead_fixed_ms
    for shape in profile_shapes(truth, ProfileGrid(batch_sizes=(1, 256), ks=(0, 7))):
        assert CostModel(view).step_time_s(shape) > 0


def run(policy_calibration: str = "fitted", noise: float = 0.0, policy: str = "smartspec", n: int = 60):
    from specdec_sim import SimConfig, run_simulation
    from specdec_sim.traces import synthetic_trace

    trace = synthetic_trace(8.0, num_requests=n, prompt_tokens=200, output_tokens=60, seed=3)
    config = SimConfig(calibration="turbospec-llama3-8b-eagle-h100", policy_calibration=policy_calibration,
                       step_time_noise=noise)
    return run_simulation(trace, config, policy, seed=5)


def test_summary_says_what_the_policy_priced_with():
    fitted, same = run("fitted").summary, run("same").summary
    assert fitted["policy_calibration"] == "turbospec-llama3-8b-eagle-h100+fitted-linear"
    assert fitted["policy_calibration_fit_mape_pct"] == pytest.approx(0.0, abs=1e-6)
    assert same["policy_calibration"] == "same" and "policy_calibration_fit_mape_pct" not in same
    assert same["step_time_noise_sigma"] == 0.0


def test_policy_calibration_by_name_prices_with_that_file():
    other = run("llama3.1-8b-eagle-h100").summary
    assert other["policy_calibration"] == "llama3.1-8b-eagle-h100"
    assert other["calibration"] == "turbospec-llama3-8b-eagle-h100"


def test_noise_zero_is_exact_and_noise_is_seeded_and_changes_step_times():
    base, quiet = run(noise=0.0), run(noise=0.0)
    assert base.summary["mean_e2el_ms"] == quiet.summary["mean_e2el_ms"]
    a, b = run(noise=0.2), run(noise=0.2)
    assert a.summary["mean_e2el_ms"] == b.summary["mean_e2el_ms"]
    assert a.summary["mean_e2el_ms"] != base.summary["mean_e2el_ms"]
    assert a.summary["step_time_noise_sigma"] == 0.2


def test_noise_factor_has_mean_one():
    noise = StepTimeNoise(0.3, seed=1)
    factors = np.array([noise.factor() for _ in range(40_000)])
    assert factors.mean() == pytest.approx(1.0, abs=0.01)
    assert np.log(factors).std() == pytest.approx(0.3, rel=0.02)
    scaled = StepTimeNoise(0.3, seed=1)(StepTime(1.0, 2.0, 3.0))
    f = StepTimeNoise(0.3, seed=1).factor()
    assert (scaled.draft_s, scaled.verify_s, scaled.overhead_s) == pytest.approx((f, 2 * f, 3 * f))


@pytest.mark.parametrize("argv, needle", [
    (["--policy-calibration", "no-such-calibration"], "no-such-calibration"),
    (["--step-time-noise", "-0.1"], "--step-time-noise"),
    (["--step-time-noise", "nan"], "--step-time-noise"),
])
def test_bad_pricing_options_are_one_line(capsys, argv, needle):
    from specdec_sim.simulator.cli import main

    rc = main(["--trace", "azure-conv", "--max-requests", "5", "--quiet", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1


def test_simulate_prints_the_calibrations_provenance(capsys):
    from specdec_sim.simulator.cli import main

    assert main(["--trace", "azure-conv", "--max-requests", "5", "--quiet", "--calibration",
                 "turbospec-llama3-8b-eagle-h100"]) == 0
    out = capsys.readouterr().out
    assert provenance_line(load_calibration("turbospec-llama3-8b-eagle-h100")) in out
    assert "policies priced steps with: turbospec-llama3-8b-eagle-h100+fitted-linear" in out


def test_provenance_line_lists_the_error_against_each_measured_set():
    cal = replace(knee_calibration(), device="GPU X", provenance={"summary": "made up for a test"},
                  fit_error={"vidur": {"mape_pct": 3.21, "points": 40}, "published": {"mape_pct": 1.5}})
    line = provenance_line(cal)
    assert line == ("calibration knee on GPU X: made up for a test. Error vs published 1.5 %, "
                    "vidur 3.2 % over 40 points")
    assert not math.isnan(len(line))

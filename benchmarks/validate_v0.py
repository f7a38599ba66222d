"""Validation section 7: vLLM V0 (2024) from its mechanics.

The V0 calibrations (profiler/roofline_v0.py) take two host costs from vLLM PR #9298's SpecDecodeWorker stage
times and nothing from any V0 serving result; this section reports those terms, the one V0 serving figure we
have at batch 1 (vLLM #12101: Llama-3.3-70B TP4, V0 ~v0.6.6, no speculation), and a short load curve of the
70B n-gram calibration (k = 4, CNN/DailyMail lengths and n-gram acceptance; benchmarks/v0_load_curve.py has
the long one): whether speculation that wins at light load loses under load in V0, where V1 keeps winning.
"""
from __future__ import annotations

from specdec_sim.costmodel import CalibrationError, load_calibration

from published_points import point
from v0_load_curve import curve, speedups
from validation_report import Check, Report, Row
from validation_setup import engine_cost, rel_error, step_ms

V0_70B = "llama3-70b-tp4-ngram-h100-v0"
CURVE_RATES, CURVE_REQUESTS = (2.0, 10.0), 200


def v0_section(points: dict, report: Report, quick: bool = False) -> None:
    try:
        cal = load_calibration(V0_70B)
    except CalibrationError:
        return
    v0 = cal.provenance.get("v0", {})
    for key, unit in (("eager_ms_per_layer", "ms/layer"), ("verification_ms_per_request", "ms/request")):
        report.rows.append(Row("7 V0 mechanics", f"v0/vllm9298/{key}", cal.name, key.replace("_", " "),
                               v0.get(key), None, unit, None, "", "derived from PR #9298's stage times (A10 host)"))
    setting = "batch1/vllm12101-70b-vanilla"
    prompt, output = (point(points, setting, m) for m in ("mean_prompt_tokens", "mean_output_tokens"))
    tpot = step_ms(engine_cost(cal, "70b-ngram", drafter=False), 1, 0, int(prompt + output / 2))
    measured = point(points, setting, "mean_tpot_derived")
    report.rows.append(Row("7 V0 mechanics", setting, cal.name, "mean TPOT, no speculation (V0 engine)", tpot,
                           measured, "ms", rel_error(tpot, measured), "%", "#12101 ran vLLM V0"))
    if quick:
        return
    ratio = speedups(curve("v0", CURVE_RATES, CURVE_REQUESTS) + curve("v1", CURVE_RATES, CURVE_REQUESTS))
    for (engine, rate), value in sorted(ratio.items()):
        report.rows.append(Row("7 V0 mechanics", f"v0/70b-ngram-k4/{engine}/rate={rate:g}", cal.name if engine == "v0"
                               else "llama3-70b-tp4-ngram-h100", "E2E speedup of fixed:4 over none", value, None, "x",
                               None, "", f"cnn-lengths, cnn-ngram acceptance, {CURVE_REQUESTS} requests"))
    low, high = ratio[("v0", CURVE_RATES[0])], ratio[("v0", CURVE_RATES[-1])]
    report.checks.append(Check("V0 70B n-gram k=4: speculation wins at light load and loses under load",
                               low > 1.0 > high, f"{cal.name}: {low:.2f}x at {CURVE_RATES[0]:g} req/s, {high:.2f}x at "
                               f"{CURVE_RATES[-1]:g} req/s (V1: {ratio[('v1', CURVE_RATES[-1])]:.2f}x)",
                               informational=True))

"""Adversarial campaign (issue 12): hostile traces, option values, calibrations and policy specs.

Every case runs the real `main(argv)` of `simulate`, `sweep` or `profile-gpu` in a forked child
(tests/adversarial_cases.py) with a 60 s limit and a memory cap, and must end in exit 0 or in one
stderr line `PROG: error: ...` with exit 2 (naming the file or option where one is at fault), never
a traceback or a hang; a successful run's summary.json must hold finite numbers. The option cases
are derived from the parsers, so a new numeric option is attacked without editing this file. The
pure entry points (trace reader, calibration loader, policy-spec parser) also get hypothesis inputs.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adversarial_cases import (BAD_TRACES, HEADER, POLICY_SPECS, SPECIAL_TRACES, Case, Outcome, calibration_variants,
                               judge, run_cases, shipped_calibration)
from adversarial_plugins import HOSTILE_POLICIES, HOSTILE_POLICY_MODULE

SIM_BASE = ["--trace", "sharegpt", "--max-requests", "20", "--policy", "fixed:3", "--quiet", "--out", "{tmp}/out"]
SIM_RATE_BASE = ["--trace", "sharegpt", "--rate", "5", "--num-requests", "20", "--policy", "fixed:3", "--quiet",
                 "--out", "{tmp}/out"]
SWEEP_BASE = ["--trace", "sharegpt", "--max-requests", "20", "--policies", "fixed:3", "--workers", "0",
              "--no-progress", "--out", "{tmp}/out"]
CAPACITY_BASE = ["--capacity", "--capacity-slo", "p99_ttft:2000", "--trace", "sharegpt", "--max-requests", "40",
                 "--policies", "none", "--workers", "0", "--no-progress", "--probe-requests", "40",
                 "--probe-duration", "2", "--rate-hi", "8", "--tol", "2", "--out", "{tmp}/out"]
HOSTILE_VALUES = {"zero": "0", "neg": "-1", "nan": "nan", "inf": "inf", "-inf": "-inf", "1e308": "1e308",
                  "1e30int": str(10**30), "text": "abc"}
# Options that take numbers as text (lists, presets): typed `str` in the parser, numeric all the same.
NUMERIC_TEXT_OPTIONS = {"simulate": {"--acceptance"},
                        "sweep": {"--rates", "--time-scales", "--replicas", "--seeds", "--acceptance"}}
# Options attacked by their own cases below (files, specs, SLO strings) or not numeric at all.
OTHER_OPTIONS = {"--help", "--version", "--trace", "--traces", "--format", "--policy", "--policies", "--calibration",
                 "--calibrations", "--policy-calibration", "--router", "--style", "--acceptance-mode", "--slo", "--capacity-slo", "--out",
                 "--plot", "--config", "--set", "--dask", "--resume", "--fail-on-error",
                 # attacked in their own files: test_acceptance_replay.py (hostile acceptance traces and profiles)
                 "--acceptance-trace", "--spans-field", "--acceptance-profile"}
RATE_OPTIONS = {"--rate", "--burstiness", "--num-requests"}  # only act together with --rate


def write_trace_files(root: Path) -> None:
    for case_id, (name, content, _, _) in BAD_TRACES.items():
        for prog in ("simulate", "sweep"):
            folder = root / f"trace-{prog}-{case_id}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)


def trace_cases() -> list[Case]:
    cases = []
    for case_id, (name, _, expect, mention) in BAD_TRACES.items():
        for prog in ("simulate", "sweep"):
            base = SIM_BASE if prog == "simulate" else SWEEP_BASE  # the whole file: no --max-requests
            argv = [*_without(_without(base, "--trace"), "--max-requests"), "--trace", f"{{tmp}}/{name}"]
            cases.append(Case(f"trace-{prog}-{case_id}", prog, argv, expect, names=name, must_mention=mention))
    for case_id, (path, expect) in SPECIAL_TRACES.items():
        for prog in ("simulate", "sweep"):
            base = SIM_BASE if prog == "simulate" else SWEEP_BASE
            name = None if path == "{tmp}" else Path(path).name
            cases.append(Case(f"trace-{prog}-{case_id}", prog, [*_without(base, "--trace"), "--trace", path], expect,
                              names=name))
    return cases


# --- every numeric option with hostile values -------------------------------------------------------

def _numeric_options(parser: argparse.ArgumentParser, prog: str) -> list[str]:
    """Option strings whose value is a number (or numbers): typed ones that parse '1' to a number,
    plus the text-typed numeric ones listed above."""
    found = []
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.choices:
            continue
        flag = action.option_strings[-1]
        if flag in NUMERIC_TEXT_OPTIONS.get(prog, set()):
            found.append(flag)
            continue
        try:
            value = action.type("1") if callable(action.type) else None
        except Exception:  # noqa: BLE001 - not a number-typed option
            continue
        if isinstance(value, (int, float)) or (isinstance(value, tuple) and value and
                                                 all(isinstance(v, (int, float)) for v in value)):
            found.append(flag)
    return found


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from specdec_sim.simulator.cli import build_parser as simulate_parser
    from specdec_sim.simulator.sweep.cli import build_parser as sweep_parser

    return {"simulate": simulate_parser(), "sweep": sweep_parser()}


def _capacity_options(parser: argparse.ArgumentParser) -> set[str]:
    """The flags of the parser's capacity-search group (they act only with --capacity)."""
    return {a.option_strings[-1] for g in parser._action_groups if "capacity" in (g.title or "")
            for a in g._group_actions if a.option_strings}


def _option_base(prog: str, flag: str, parser: argparse.ArgumentParser) -> list[str]:
    if prog == "simulate":
        return SIM_RATE_BASE if flag in RATE_OPTIONS else SIM_BASE
    return CAPACITY_BASE if flag in _capacity_options(parser) else SWEEP_BASE


def _without(argv: list[str], flag: str) -> list[str]:
    """`argv` minus `flag` and its value, so the attacked option is given exactly once."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == flag:
            skip = True
            continue
        out.append(item)
    return out


def option_cases() -> list[Case]:
    cases = []
    for prog, parser in _parsers().items():
        for flag in _numeric_options(parser, prog):
            for label, value in HOSTILE_VALUES.items():
                argv = [*_without(_option_base(prog, flag, parser), flag), f"{flag}={value}"]
                cases.append(Case(f"option-{prog}{flag}-{label}", prog, argv, "either", names=None))
    return cases


SLO_VALUES = {"no_ms": "ttft", "text_ms": "ttft:abc", "neg_ms": "ttft:-1", "nan_ms": "ttft:nan",
              "unknown_metric": "nope:100", "empty": "", "many_colons": "ttft:1:2"}


def text_option_cases() -> list[Case]:
    """SLO strings, odd --out targets, a bad --set key, a bad sweep journal and config."""
    cases = [Case(f"slo-simulate-{k}", "simulate", [*SIM_BASE, "--slo", v], "error", names="--slo")
             for k, v in SLO_VALUES.items() if v]
    cases += [Case(f"capacity-slo-{k}", "sweep", [*_without(CAPACITY_BASE, "--capacity-slo"), "--capacity-slo",
                                                  f"p99_{v}"], "error") for k, v in SLO_VALUES.items() if v]
    cases += [
        Case("out-is-file-simulate", "simulate", [*SIM_BASE[:-1], "{tmp}/afile"], "error", names="afile"),
        Case("out-under-file-simulate", "simulate", [*SIM_BASE[:-1], "{tmp}/afile/sub"], "error", names="afile"),
        Case("out-in-proc-simulate", "simulate", [*SIM_BASE[:-1], "/proc/adversarial/out"], "error", names="/proc"),
        Case("out-is-file-sweep", "sweep", [*SWEEP_BASE[:-1], "{tmp}/afile"], "error", names="afile"),
        Case("sweep-set-unknown-key", "sweep", [*SWEEP_BASE, "--set", "no_such_field=1"], "error",
             names="no_such_field"),
        Case("sweep-set-no-equals", "sweep", [*SWEEP_BASE, "--set", "max_k"], "error"),
        Case("sweep-set-max-k-nan", "sweep", [*SWEEP_BASE, "--set", "max_k=nan"], "error"),
        Case("sweep-seeds-huge-range", "sweep", [*_without(SWEEP_BASE, "--seeds"), "--seeds", "0-99999999999"],
             "error"),
        Case("sweep-bad-journal-line", "sweep", [*SWEEP_BASE[:-1], "{tmp}/journal"], "either"),
        Case("sweep-config-garbage", "sweep", ["--config", "{tmp}/afile", "--workers", "0"], "error", names="afile"),
        Case("simulate-acceptance-spread-inf", "simulate", [*SIM_BASE, "--acceptance-spread", "inf"], "error",
             names="--acceptance-spread"),
        Case("simulate-rate-1e-300", "simulate", [*_without(SIM_RATE_BASE, "--rate"), "--rate", "1e-300"], "error",
             names="--rate"),
        Case("simulate-time-scale-1e308", "simulate", [*SIM_BASE, "--time-scale", "1e308"], "error",
             names="--time-scale"),
        Case("simulate-replicas-1e30", "simulate", [*SIM_BASE, "--replicas", str(10**30)], "error",
             names="--replicas"),
        Case("sweep-capacity-tol-nan", "sweep", [*CAPACITY_BASE, "--tol", "nan"], "error", names="--tol"),
        Case("simulate-max-k-3-fixed-5", "simulate", [*_without(SIM_BASE, "--policy"), "--max-k", "3", "--policy",
                                                      "fixed:5"], "either"),
        Case("trace-empty-name", "simulate", [*_without(SIM_BASE, "--trace"), "--trace", ""], "error"),
        Case("format-forced-mismatch", "simulate", [*SIM_BASE, "--format", "mooncake"], "either"),
        Case("calibration-empty-name", "simulate", [*SIM_BASE, "--calibration", ""], "error"),
        Case("acceptance-one", "simulate", [*SIM_BASE, "--acceptance", "1"], "either"),
        Case("acceptance-unknown-preset", "simulate", [*SIM_BASE, "--acceptance", "gsm9k"], "error",
             names="gsm9k"),
        Case("position-rates-above-one", "simulate", [*SIM_BASE, "--acceptance-mode", "per-position",
                                                      "--position-rates", "0.9,1.5"], "error"),
        Case("position-rates-nan", "simulate", [*SIM_BASE, "--acceptance-mode", "per-position",
                                                "--position-rates", "0.9,nan"], "error"),
        Case("slo-huge", "simulate", [*SIM_BASE, "--slo", "ttft:1e308"], "either"),
        Case("sweep-rates-mixed-nan", "sweep", [*SWEEP_BASE, "--rates", "1,nan"], "error", names="--rates"),
        Case("sweep-replicas-zero-in-list", "sweep", [*SWEEP_BASE, "--replicas", "1,0"], "error",
             names="--replicas"),
        Case("profile-out-is-file", "profile-gpu", ["--target", "tiny-llama", "--device", "cpu", "--grid", "quick",
                                                    "--out", "{tmp}/afile"], "error", names="afile"),
        Case("profile-binary-replay", "profile-gpu", ["--target", "tiny-llama", "--device", "cpu", "--replay",
                                                      "{tmp}/garbage.csv", "--calibration", "turbospec-llama3-8b-eagle-h100"],
             "error", names="garbage.csv"),
        Case("profile-binary-measurements", "profile-gpu", ["--target", "tiny-llama", "--device", "cpu", "--grid",
                                                            "quick", "--out", "{tmp}/prof"], "error",
             names="measurements.csv"),
    ]
    return cases


def write_text_option_files(root: Path) -> None:
    garbage = random.Random(3).randbytes(2048)
    for folder in root.iterdir():
        (folder / "afile").write_bytes(garbage)
        (folder / "garbage.csv").write_bytes(garbage)
    journal = root / "sweep-bad-journal-line" / "journal"
    journal.mkdir(exist_ok=True)
    (journal / "runs.jsonl").write_text('{"run_id": "x", "status": "ok"}\nnot json at all\n{"no_run_id": 1}\n[1, 2]\n')
    prof = root / "profile-binary-measurements" / "prof"
    prof.mkdir(exist_ok=True)
    (prof / "measurements.csv").write_bytes(garbage)


# --- malformed calibrations and policy specs --------------------------------------------------------

def calibration_cases() -> list[Case]:
    return [Case(f"calibration-{key}", "simulate", [*SIM_BASE, "--calibration", f"{{tmp}}/cal_{key}.json"], expect,
                 names=f"cal_{key}.json") for key, (_, expect) in calibration_variants().items()]


def write_calibrations(root: Path) -> None:
    for key, (content, _) in calibration_variants().items():
        (root / f"calibration-{key}" / f"cal_{key}.json").write_bytes(content)


def policy_cases() -> list[Case]:
    return [Case(f"policy-{key}", "simulate", [*_without(SIM_BASE, "--policy"), "--policy", spec], expect)
            for key, (spec, expect) in POLICY_SPECS.items()]


def plugin_cases() -> list[Case]:
    """Plugin policies with hostile proposals or exceptions, on a batch of several requests (--rate)."""
    return [Case(f"plugin-{name}", "simulate", [*_without(SIM_RATE_BASE, "--policy"), "--policy",
                                                f"hostile_policies:{name}"], expect,
                 names=f"policy 'hostile_policies:{name}'" if expect == "error" else None, must_mention=mention)
            for name, (expect, mention) in HOSTILE_POLICIES.items()]


def write_plugin_modules(root: Path) -> None:
    for name in HOSTILE_POLICIES:
        (root / f"plugin-{name}" / "hostile_policies.py").write_text(HOSTILE_POLICY_MODULE)


# --- the campaign -----------------------------------------------------------------------------------

def all_cases() -> list[Case]:
    return (trace_cases() + option_cases() + text_option_cases() + calibration_cases() + policy_cases()
            + plugin_cases())


CASES = {c.id: c for c in all_cases()}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("adversarial")
    for case in CASES.values():
        (root / case.id).mkdir(parents=True, exist_ok=True)
    write_trace_files(root)
    write_text_option_files(root)
    write_calibrations(root)
    write_plugin_modules(root)
    return run_cases(list(CASES.values()), root)


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_hostile_input_is_refused_in_one_line(outcomes, case_id):
    case, out = CASES[case_id], outcomes[case_id]
    problems = judge(case, out)
    argv = " ".join(case.argv)
    assert not problems, (f"{case.prog} {argv[:300]}\n  -> {'; '.join(problems)}\n  rc={out.rc} "
                          f"stderr: {out.stderr[-1200:]!r}")


def test_every_parser_option_is_attacked():
    """A new option must be numeric (attacked above), a flag, a choice, or covered by its own cases."""
    for prog, parser in _parsers().items():
        numeric = set(_numeric_options(parser, prog))
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.choices:
                continue
            flag = action.option_strings[-1]
            assert flag in numeric or flag in OTHER_OPTIONS, f"{prog} {flag}: add adversarial cases for it"


# --- hypothesis on the pure entry points -------------------------------------------------------------

FAST = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=600) | st.text(alphabet=st.sampled_from(list("0123456789,.-e\nnaif \r\"{}:")), max_size=400)
       .map(lambda s: (HEADER + "\n" + s).encode()))
def test_any_trace_bytes_load_or_raise_trace_error(tmp_path_factory, content):
    from specdec_sim.traces import TraceError, load_trace

    path = tmp_path_factory.mktemp("hyp") / "t.csv"
    path.write_bytes(content)
    try:
        trace = load_trace(path)
    except TraceError as exc:
        assert "\n" not in str(exc).strip() and "t.csv" in str(exc)
        return
    import numpy as np

    assert (trace.prompt_tokens >= 1).all() and (trace.output_tokens >= 1).all()
    assert np.isfinite(trace.arrival_s).all() and (np.diff(trace.arrival_s) >= 0).all()


_JSON_LEAF = st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10) | st.text(max_size=4)


@FAST
@given(st.dictionaries(st.sampled_from(["fixed_ms", "per_kv_token_ms", "per_batched_token_ms", "per_seq_ms",
                                        "spec_on_ms", "knee_tokens", "after_knee_ms", "bogus"]), _JSON_LEAF,
                       max_size=6))
def test_any_target_coefficients_load_sanely_or_raise_calibration_error(target):
    """A calibration either loads with finite, non-negative step times or is refused with CalibrationError."""
    from specdec_sim.costmodel import CalibrationError, CostModel
    from specdec_sim.costmodel.calibration import calibration_from_dict
    from specdec_sim.costmodel.model import uniform_shape

    data = shipped_calibration()
    data["target"] = target
    try:
        cal = calibration_from_dict(data, "hyp.json")
    except CalibrationError as exc:
        assert "hyp.json" in str(exc) and "\n" not in str(exc)
        return
    cost = CostModel(cal)
    for batch in (1, 16, 256):
        for k in (0, 3, 7):
            t = cost.step_time_s(uniform_shape(batch, batch * 512, k))
            assert t == t and 0 <= t < float("inf"), (target, batch, k, t)


@FAST
@given(st.sampled_from(["none", "fixed", "smartspec", "turbospec", "goodput-greedy", "oracle", "vllm-disable"]),
       st.lists(st.sampled_from(list("kabintervl_=,.-0123456789e") + ["nan", "inf", "k_max", "interval", "=",
                                                                       "window", "bias", "1e999", "-0"]),
                max_size=12).map("".join))
def test_any_policy_params_build_or_raise_policy_spec_error(name, params):
    from specdec_sim.policies import PolicySpecError, make_policy

    spec = f"{name}:{params}"
    try:
        make_policy(spec)
    except PolicySpecError as exc:
        assert "\n" not in str(exc)


def test_the_judge_is_not_vacuous(tmp_path):
    """Each broken rule is reported: traceback, wrong exit, usage block, unnamed file, hang, NaN summary."""
    case = Case("x", "simulate", [], "error", names="bad.csv")

    def outcome(rc: int, stderr: str, timed_out: bool = False) -> Outcome:
        return Outcome("x", rc, "", stderr, 0.1, timed_out, str(tmp_path))

    assert judge(case, outcome(2, "simulate: error: bad.csv: row 2: not a number\n")) == []
    assert "traceback" in judge(case, outcome(1, "Traceback (most recent call last):\n  ...\nValueError: x\n"))
    assert any("2 stderr lines" in p for p in judge(case, outcome(2, "usage: simulate\nsimulate: error: bad.csv\n")))
    assert any("does not name" in p for p in judge(case, outcome(2, "simulate: error: something\n")))
    assert any("hang" in p for p in judge(case, outcome(-9, "", timed_out=True)))
    assert any("exit code 0" in p for p in judge(case, outcome(0, "")))
    (tmp_path / "summary.json").write_text('{"completed": 3, "mean_e2el_ms": 0.0, "mean_itl_ms": NaN}')
    problems = judge(Case("y", "simulate", [], "either"), outcome(0, ""))
    assert any("non-finite mean_itl_ms" in p for p in problems) and any("mean E2E" in p for p in problems)

"""Predicted vs measured for every published GPU measurement (benchmarks/data) the simulator can express.

Seven sections (sources in `benchmarks/data/SOURCE.md`; the numbers are copied there, nothing else is read):

1. batch-1 TPOT vs k = 2..7, EAGLE-1 and EAGLE-3 heads on Llama-3.1-8B (vLLM #20780), acceptance set per k
   to reproduce the published acceptance length (AL): (a) closed form TPOT = step time / AL, (b) the
   simulator on requests far apart in time (batch 1) under `fixed:k`, its summary's mean TPOT;
2. batch-1 levels of other vLLM and SGLang threads (#20780 vanilla, #16035, SGLang #6606/#6705, 70B #12101);
3. SpecDecode-Bench Fig.4: draft : verify : overhead shares of a step at batch 1, 64, 128, 512, k = 3;
4. vLLM PR #32374: per-step ITL at batch 1-256 x K = 0/1/3/5, the goodput-best K per batch and the schedule
   (validate_load.py);
5. 70B TP4 fixed k = 3 against no speculation over batch 1..256, #49986's context direction and #49548's
   dynamic-k tax (validate_load.py);
6. leave-one-source-out: every H100 calibration refitted without each source, its error on that source
   (validate_loso.py);
7. vLLM V0 (2024): PR #9298's stage times and the V0 load curve of Llama-3-70B TP4 with n-gram (validate_v0.py).

    python benchmarks/validate_published.py                        # print the tables and the done-when checks
    python benchmarks/validate_published.py --out results/ --markdown docs/validation.md --check
    python benchmarks/validate_published.py --calibration 8b-eagle=my-fit.json --quick

`--calibration ROLE=NAME|PATH` replaces the calibration of one role (`--help` lists the roles and their
defaults); a role whose default calibration is not shipped falls back to the next name listed. Exit 0,
or with `--check` 1 when a done-when check fails; a bad option or data file is one line and exit 2.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from specdec_sim.cli_support import OneLineParser
from specdec_sim.costmodel import Calibration, CalibrationError, CostModel, step_shape
from specdec_sim.acceptance.rates import alpha_from_acceptance_length

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling module, also when this file is imported from elsewhere (tests)
    sys.path.insert(0, str(HERE))
from published_points import ValidationError, load_points, point  # noqa: E402
from validate_load import crossover_batch, load_sections  # noqa: E402,F401
from validate_loso import loso_section  # noqa: E402
from validate_v0 import v0_section  # noqa: E402
from validation_report import Check, Report, Row, print_report, write_outputs  # noqa: E402
from validation_setup import (ERA, FIG4_BATCHES, KS, MT_BENCH_CONTEXT_TOKENS, MT_BENCH_OUTPUT_TOKENS,  # noqa: E402
                              MT_BENCH_PROMPT_TOKENS, ROLES, SHARE_PP, TPOT_MAE_PCT,
                              Options, engine_cost, prefill_ms, rel_error, resolve_calibrations, simulated_tpot_ms,
                              step_ms)

# ---- sections ----------------------------------------------------------------------------------

def tpot_vs_k(points: dict, head: str, role: str, cal: Calibration, opts: Options, report: Report) -> None:
    """Section 1: batch-1 TPOT for k = 2..7 of one head, closed form and simulated, MAE and best k."""
    era = ERA["vllm20780"]
    cost, context = engine_cost(cal, role, era=era), MT_BENCH_CONTEXT_TOKENS
    measured, closed, simulated = {}, {}, {}
    for k in KS:
        setting = f"tpot_vs_k/{head}/k={k}"
        al, measured[k] = point(points, setting, "acceptance_length"), point(points, setting, "mean_tpot")
        alpha = alpha_from_acceptance_length(al, k)
        closed[k] = step_ms(cost, 1, k, context) / al
        simulated[k] = simulated_tpot_ms(cal, alpha, k, opts, era)
        for how, value in (("closed", closed[k]), ("sim", simulated[k])):
            report.rows.append(Row("1 TPOT vs k", setting, cal.name, f"mean TPOT [{how}]", value, measured[k], "ms",
                                   rel_error(value, measured[k]), "%", f"AL {al:g}, alpha {alpha:.3f}"))
    best = min(KS, key=measured.get)
    summary = {how: (float(np.mean([abs(rel_error(v[k], measured[k])) for k in KS])), min(KS, key=v.get))
               for how, v in (("closed", closed), ("sim", simulated))}
    for how, (mae, _) in summary.items():
        report.rows.append(Row("1 TPOT vs k", f"tpot_vs_k/{head}", cal.name, f"TPOT MAE k=2..7 [{how}]", mae, None,
                               "%", None, ""))
        report.checks.append(Check(f"{head} batch-1 TPOT MAE <= {TPOT_MAE_PCT:g} % ({how})", mae <= TPOT_MAE_PCT,
                                   f"{cal.name}: MAE {mae:.1f} % over k=2..7 (vLLM #20780)"))
    for how, (_, best_k) in summary.items():
        report.rows.append(Row("1 TPOT vs k", f"tpot_vs_k/{head}", cal.name, f"best k [{how}]", best_k, best, "k",
                               best_k - best, ""))
    best_closed = min(KS, key=closed.get)
    report.checks.append(Check(f"{head} batch-1 best k = {best} (closed)", best_closed == best,
                               f"{cal.name}: best k {best_closed} (simulated {min(KS, key=simulated.get)}), "
                               f"measured {best}"))


def offline_tok_s(cost: CostModel, prompt: float, output: float, al: float, k: int) -> float:
    """Output tokens per second of one request at a time: prefill, then (output - 1) tokens at step/AL each."""
    decode_ms = step_ms(cost, 1, k, int(prompt + output / 2)) / al
    return output / ((prefill_ms(cost, int(round(prompt))) + (output - 1) * decode_ms) / 1000.0)


def batch1_levels(points: dict, cals: dict, report: Report) -> None:
    """Section 2: batch-1 TPOT and throughput levels of the vLLM and SGLang threads."""
    def add(setting, cal, metric, predicted, measured, unit, note=""):
        report.rows.append(Row("2 batch-1 levels", setting, cal.name, metric, predicted, measured, unit,
                               rel_error(predicted, measured), "%", note))

    context = MT_BENCH_CONTEXT_TOKENS
    cal = cals["8b-eagle"]
    if cal is not None:
        plain, spec = (engine_cost(cal, "8b-eagle", drafter=False, era="legacy"),
                       engine_cost(cal, "8b-eagle", era="legacy"))  # #20780 and #16035 ran vLLM V1 <= 0.10
        add("batch1/vllm20780-vanilla", cal, "mean TPOT, no speculation", step_ms(plain, 1, 0, context),
            point(points, "batch1/vllm20780-vanilla", "mean_tpot"), "ms")
        add("batch1/vllm16035-vanilla", cal, "output tok/s, no speculation",
            offline_tok_s(plain, MT_BENCH_PROMPT_TOKENS, MT_BENCH_OUTPUT_TOKENS, 1.0, 0),
            point(points, "batch1/vllm16035-vanilla", "output_throughput"), "tok/s")
        for k in (2, 4):
            setting = f"batch1/vllm16035-eagle1-k{k}"
            al = point(points, setting, "acceptance_length")
            add(setting, cal, f"output tok/s, EAGLE-1 k={k}",
                offline_tok_s(spec, MT_BENCH_PROMPT_TOKENS, MT_BENCH_OUTPUT_TOKENS, al, k),
                point(points, setting, "output_throughput"), "tok/s", f"AL {al:g} (published)")
        al = point(points, "tpot_vs_k/eagle1/k=2", "acceptance_length")
        spec = engine_cost(cal, "8b-eagle", era=ERA["sglang"])  # SGLang captures the whole decode forward
        for pr in ("6606", "6705"):
            setting = f"batch1/sglang{pr}-eagle1-k2"
            add(setting, cal, "mean TPOT, EAGLE-1 k=2", step_ms(spec, 1, 2, context) / al,
                point(points, setting, "mean_tpot"), "ms", f"AL {al:g} assumed (#20780 EAGLE-1 k=2)")
    cal = cals["70b-ngram"]
    if cal is not None:
        plain, setting = engine_cost(cal, "70b-ngram", drafter=False), "batch1/vllm12101-70b-vanilla"
        prompt, output = (point(points, setting, m) for m in ("mean_prompt_tokens", "mean_output_tokens"))
        add(setting, cal, "mean TTFT, no speculation", prefill_ms(plain, int(round(prompt))),
            point(points, setting, "mean_ttft"), "ms", "one prefill step; no server path")
        add(setting, cal, "mean TPOT, no speculation", step_ms(plain, 1, 0, int(prompt + output / 2)),
            point(points, setting, "mean_tpot_derived"), "ms", "measured TPOT derived from duration and TTFT")
        add(setting, cal, "output tok/s, no speculation", offline_tok_s(plain, prompt, output, 1.0, 0),
            point(points, setting, "output_throughput"), "tok/s", f"prompt {prompt:g}, output {output:g} tokens")


FIG4 = (("8b-baseline", "8b-eagle", 0), ("8b-eagle", "8b-eagle", 3), ("8b-eagle3", "8b-eagle3", 3),
        ("8b-ngram", "8b-ngram", 3), ("70b-baseline", "70b-ngram", 0), ("70b-ngram", "70b-ngram", 3),
        ("70b-eagle", "70b-eagle", 3), ("70b-draft", "70b-draft", 3))  # Fig.4 bar -> role, k


def step_shares(cost: CostModel, batch: int, k: int, context_tokens: int) -> dict[str, float]:
    """Draft, verify and overhead shares (%) of one uniform step."""
    t = cost.step_time(step_shape([k] * batch, batch * context_tokens))
    total = t.total_s
    return {"draft": 100 * t.draft_s / total, "verify": 100 * t.verify_s / total,
            "overhead": 100 * t.overhead_s / total}


def fig4_shares(points: dict, cals: dict, opts: Options, report: Report) -> None:
    """Section 3: Fig.4 shares; the published rejection-sampling share is folded into overhead."""
    for bar, role, k in FIG4:
        cal = cals[role]
        if cal is None:
            continue
        cost = engine_cost(cal, role, drafter=k > 0, era=ERA["fig4"])
        for batch in FIG4_BATCHES:
            setting = f"fig4/{bar}/B={batch}"
            shares = step_shares(cost, batch, k, opts.fig4_context_tokens)
            published = {part: point(points, setting, f"{part}_share") for part in ("draft", "verify")}
            published["overhead"] = point(points, setting, "overhead_share") + point(points, setting, "sample_share")
            outside = (batch > cal.valid_range.max_batch_size
                       or batch * opts.fig4_context_tokens > cal.valid_range.max_context_tokens)
            note = f"context {opts.fig4_context_tokens}" + ("; outside valid_range" if outside else "")
            for part in ("draft", "verify", "overhead"):
                report.rows.append(Row("3 Fig.4 shares", setting, cal.name, f"share [{part}]", shares[part],
                                       published[part], "%", shares[part] - published[part], "pp", note))
            if bar == "8b-eagle" and batch in (1, 128):
                worst = max(abs(shares[p] - published[p]) for p in shares)
                report.checks.append(Check(f"Fig.4 8B EAGLE shares at batch {batch} within {SHARE_PP:g} pp",
                                           worst <= SHARE_PP, f"{cal.name}: largest gap {worst:.1f} pp " + ", ".join(
                                               f"{p} {shares[p]:.1f}/{published[p]:.1f}" for p in shares)))


def validate(points: dict, opts: Options) -> Report:
    """Every section with the calibrations of `opts.overrides` (else the shipped defaults)."""
    cals = resolve_calibrations(opts.overrides)
    report = Report(calibrations={role: {"name": cal.name, "source": str(cal.provenance.get("source", "")),
                                         "wanted": cal.name if role in opts.overrides else ROLES[role][0][0]}
                                  for role, cal in cals.items() if cal is not None})
    for head, role in (("eagle1", "8b-eagle"), ("eagle3", "8b-eagle3")):
        if cals[role] is not None:
            tpot_vs_k(points, head, role, cals[role], opts, report)
    batch1_levels(points, cals, report)
    fig4_shares(points, cals, opts, report)
    load_sections(points, cals, opts, report)
    if not opts.overrides:  # the held-out fits and the V0 files are of the shipped calibrations' own builds
        loso_section(report)
        v0_section(points, report, quick=opts.quick)
    return report


# ---- command line ------------------------------------------------------------------------------

def _role_help() -> str:
    return "; ".join(f"{role}: {' then '.join(names)}" for role, (names, _) in ROLES.items())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog="validate_published.py", error_type=ValidationError, description=__doc__.splitlines()[0])
    p.add_argument("--calibration", action="append", default=[], metavar="ROLE=NAME|PATH",
                   help=f"use this calibration for one role (repeatable). Roles and defaults: {_role_help()}")
    p.add_argument("--context", type=int, metavar="TOKENS",
                   help=f"context tokens per request in sections 3-5 (default: Fig.4 {Options.fig4_context_tokens}, "
                        f"k-table {Options.ktable_context_tokens}, 70B {Options.load_context_tokens})")
    p.add_argument("--sim-requests", type=int, default=Options.sim_requests,
                   help="requests per simulated batch-1 run in section 1")
    p.add_argument("--quick", action="store_true", help="5 simulated requests per k, no V0 load curve (a smoke run)")
    p.add_argument("--out", type=Path, help="write validation.csv and validation.json into this folder")
    p.add_argument("--markdown", type=Path, metavar="FILE",
                   help="write the table into FILE between its generated-block markers (appended if absent)")
    p.add_argument("--check", action="store_true", help="exit 1 when a done-when check fails")
    return p.parse_args(argv)


def options_from(args: argparse.Namespace) -> Options:
    overrides = {}
    for item in args.calibration:
        role, sep, value = item.partition("=")
        if not sep or not value.strip():
            raise ValidationError(f"--calibration {item!r}: expected ROLE=NAME|PATH")
        overrides[role.strip()] = value.strip()
    if args.context is not None and not 1 <= args.context <= 1_000_000:
        raise ValidationError(f"--context {args.context}: must be in 1..1000000 tokens")
    if not 1 <= args.sim_requests <= 10_000:
        raise ValidationError(f"--sim-requests {args.sim_requests}: must be in 1..10000")
    opts = Options(sim_requests=5 if args.quick else args.sim_requests, overrides=overrides, quick=args.quick)
    if args.context is None:
        return opts
    return replace(opts, fig4_context_tokens=args.context, ktable_context_tokens=args.context,
                   load_context_tokens=args.context)


def check_outputs(out: Path | None, markdown_path: Path | None) -> None:
    """Refuse unwritable destinations before computing anything."""
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValidationError(f"--out {out}: {exc.strerror or exc}") from None
    if markdown_path is not None and (markdown_path.is_dir() or not markdown_path.parent.is_dir()):
        raise ValidationError(f"--markdown {markdown_path}: not a file in an existing folder")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        opts = options_from(args)
        check_outputs(args.out, args.markdown)
        report = validate(load_points(), opts)
        print_report(report)
        write_outputs(report, args.out, args.markdown, asdict(opts))
    except (ValidationError, CalibrationError) as exc:
        print(f"validate_published: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"validate_published: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 1 if args.check and not all(c.passed for c in report.checks if not c.informational) else 0


if __name__ == "__main__":
    sys.exit(main())

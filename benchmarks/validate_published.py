"""Predicted vs measured for every published GPU measurement (benchmarks/data) the simulator can express.

Five sections (sources in `benchmarks/data/SOURCE.md`; the numbers are copied there, nothing else is read):

1. batch-1 TPOT vs k = 2..7, EAGLE-1 and EAGLE-3 heads on Llama-3.1-8B (vLLM #20780), acceptance set per k
   to reproduce the published acceptance length (AL): (a) closed form TPOT = step time / AL, (b) the
   simulator on requests far apart in time (batch 1) under `fixed:k`, its summary's mean TPOT;
2. batch-1 levels of other vLLM and SGLang threads (#20780 vanilla, #16035, SGLang #6606/#6705, 70B #12101);
3. SpecDecode-Bench Fig.4: draft : verify : overhead shares of a step at batch 1, 64, 128, 512, k = 3;
4. the best k by batch size for EAGLE on Llama-3.1-8B (vLLM PR #32374) from `build_k_table`;
5. 70B TP4: fixed k = 3 against no speculation in tokens/s per step over batch 1..256, and the crossover.

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from specdec_sim.costmodel import (Calibration, CalibrationError, CostModel, available_calibrations, load_calibration,
                                   prefill_terms, step_shape)
from specdec_sim.policies.build_table import build_k_table
from specdec_sim.acceptance.rates import expected_tokens
from specdec_sim.acceptance.rates import alpha_from_acceptance_length
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine import build_cost_model, run_simulation
from specdec_sim.traces import Trace

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling module, also when this file is imported from elsewhere (tests)
    sys.path.insert(0, str(HERE))
from published_points import ValidationError, load_points, point  # noqa: E402
from validation_report import Check, Report, Row, print_report, write_outputs  # noqa: E402

# role -> (calibration names in order of preference, drafting style the engine runs it with)
ROLES: dict[str, tuple[tuple[str, ...], str]] = {
    "8b-eagle": (("llama3.1-8b-eagle-h100", "turbospec-llama3-8b-eagle-h100"), "draft"),
    "8b-eagle3": (("llama3.1-8b-eagle3-h100", "turbospec-llama3-8b-eagle-h100"), "draft"),
    "8b-ngram": (("llama3.1-8b-ngram-h100", "turbospec-llama3-8b-eagle-h100"), "ngram"),
    "70b-ngram": (("llama3-70b-tp4-ngram-h100", "turbospec-llama3-70b-tp4-ngram-h100"), "ngram"),
    "70b-eagle": (("llama3-70b-tp4-eagle-h100",), "draft"),
    "70b-draft": (("llama3-70b-tp4-draft1b-h100",), "draft"),
}
KS = range(2, 8)  # #20780 measured k = 2..7
MT_BENCH_PROMPT_TOKENS = 128  # assumed: MT-Bench single-turn prompt with the chat template (not published)
MT_BENCH_OUTPUT_TOKENS = 256  # assumed: vLLM's default output length for the MT-Bench runs (not published)
MT_BENCH_CONTEXT_TOKENS = MT_BENCH_PROMPT_TOKENS + MT_BENCH_OUTPUT_TOKENS // 2  # a decode step's mean context: 256
FIG4_BATCHES = (1, 64, 128, 512)
KTABLE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TPOT_MAE_PCT, SHARE_PP = 5.0, 5.0  # done-when tolerances (issue 9)


@dataclass(frozen=True)
class Options:
    fig4_context_tokens: int = 1024  # per request in Fig.4 (its dataset is not stated; the builder fits at 1024)
    # per request in the k-table: PR #32374's author is #20780's, whose benchmark is MT-Bench (section 1's context)
    ktable_context_tokens: int = MT_BENCH_CONTEXT_TOKENS
    load_context_tokens: int = 1024  # per request in the 70B comparison
    sim_requests: int = 100  # batch-1 simulated requests per k (section 1b)
    overrides: dict = field(default_factory=dict)  # role -> NAME|PATH
    seed: int = 0


# ---- calibrations ------------------------------------------------------------------------------

def resolve_calibrations(overrides: dict) -> dict[str, Calibration | None]:
    """Role -> the calibration it uses (an override, else the first shipped name), None when none is shipped."""
    unknown = sorted(set(overrides) - set(ROLES))
    if unknown:
        raise ValidationError(f"--calibration: unknown role {unknown[0]!r} (roles: {', '.join(ROLES)})")
    shipped = set(available_calibrations())
    out: dict[str, Calibration | None] = {}
    for role, (names, _) in ROLES.items():
        name = overrides.get(role) or next((n for n in names if n in shipped), None)
        try:
            out[role] = load_calibration(name) if name else None
        except CalibrationError as exc:
            raise ValidationError(f"--calibration {role}={name}: {exc}") from None
    return out


def engine_cost(cal: Calibration, role: str, drafter: bool = True) -> CostModel:
    """The cost model the engine would run this calibration with (its n-gram drafting rule included)."""
    return build_cost_model(SimConfig(calibration=cal.name, style=ROLES[role][1]), cal, drafter=drafter)[0]


# ---- the priced quantities -------------------------------------------------------------------

def step_ms(cost: CostModel, batch: int, k: int, context_tokens: int) -> float:
    """One decode step of `batch` requests of `context_tokens` each, all proposing k."""
    return cost.step_time_s(step_shape([k] * batch, batch * context_tokens)) * 1000.0


def prefill_ms(cost: CostModel, prompt_tokens: int) -> float:
    """A step that prefills one prompt alone (the time to first token at batch 1)."""
    return cost.step_time_s(step_shape([], 0, prefill_terms([(prompt_tokens, 0)]))) * 1000.0


def simulated_tpot_ms(cal: Calibration, alpha: float, k: int, opts: Options) -> float:
    """Mean TPOT of requests 1000 s apart (always batch 1) under fixed:k, identical acceptance alpha."""
    n = opts.sim_requests
    trace = Trace(request_id=np.arange(n), arrival_s=np.arange(n) * 1000.0,
                  prompt_tokens=np.full(n, MT_BENCH_PROMPT_TOKENS), output_tokens=np.full(n, MT_BENCH_OUTPUT_TOKENS),
                  source="validate_published batch-1 trace")
    config = SimConfig(calibration=cal.name, acceptance=repr(alpha), acceptance_spread=0.0, max_k=max(KS),
                       record_steps=False)
    return float(run_simulation(trace, config, f"fixed:{k}", seed=opts.seed, calibration=cal).summary["mean_tpot_ms"])


def rel_error(predicted: float, measured: float) -> float:
    return (predicted / measured - 1.0) * 100.0


# ---- sections ----------------------------------------------------------------------------------

def tpot_vs_k(points: dict, head: str, role: str, cal: Calibration, opts: Options, report: Report) -> None:
    """Section 1: batch-1 TPOT for k = 2..7 of one head, closed form and simulated, MAE and best k."""
    cost, context = engine_cost(cal, role), MT_BENCH_CONTEXT_TOKENS
    measured, closed, simulated = {}, {}, {}
    for k in KS:
        setting = f"tpot_vs_k/{head}/k={k}"
        al, measured[k] = point(points, setting, "acceptance_length"), point(points, setting, "mean_tpot")
        alpha = alpha_from_acceptance_length(al, k)
        closed[k] = step_ms(cost, 1, k, context) / al
        simulated[k] = simulated_tpot_ms(cal, alpha, k, opts)
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
        plain, spec = engine_cost(cal, "8b-eagle", drafter=False), engine_cost(cal, "8b-eagle")
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
        cost = engine_cost(cal, role, drafter=k > 0)
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


def published_best_k(points: dict, batch: int) -> int | None:
    if batch <= 16:
        return int(point(points, "best_k/8b-eagle/B=1-16", "best_k"))
    if 64 <= batch <= 128:
        return int(point(points, "best_k/8b-eagle/B=64-128", "best_k"))
    return int(point(points, "best_k/8b-eagle/B>=256", "best_k")) if batch >= 256 else None


def published_k_values(points: dict) -> tuple[int, ...]:
    """The proposal lengths PR #32374's schedule chooses among (3, 2 and 0): the like-for-like candidate set."""
    return tuple(sorted({int(value) for (setting, metric), value in points.items()
                         if setting.startswith("best_k/8b-eagle/") and metric == "best_k"}))


def best_k_table(points: dict, cals: dict, opts: Options, report: Report) -> None:
    """Section 4: build_k_table with the published EAGLE-1 acceptance (AL at k=3, #20780) against PR #32374.

    The PR publishes a schedule over k in {3, 2, 0}; the checked table chooses among the same values. The
    table over every k in 0..7 is reported beside it: where it picks k = 1 no published measurement exists.
    """
    cal = cals["8b-eagle"]
    if cal is None:
        return
    alpha = alpha_from_acceptance_length(point(points, "tpot_vs_k/eagle1/k=3", "acceptance_length"), 3)
    sizes = [b for b in KTABLE_BATCHES if b <= cal.valid_range.max_batch_size]
    cost, context, published_ks = engine_cost(cal, "8b-eagle"), opts.ktable_context_tokens, published_k_values(points)
    table = build_k_table(cost, alpha, context, max(KS), sizes, candidates=published_ks)
    ks = {b: k for lo, hi, k in table for b in sizes if lo <= b <= hi}
    free = {b: k for lo, hi, k in build_k_table(cost, alpha, context, max(KS), sizes) for b in sizes if lo <= b <= hi}
    candidates = ",".join(map(str, published_ks))
    for b in sizes:
        want = published_best_k(points, b)
        report.rows.append(Row("4 best k by batch", f"best_k/8b-eagle/B={b}", cal.name, "best k", ks[b], want, "k",
                               None if want is None else ks[b] - want, "",
                               f"alpha {alpha:.3f}, context {context}, k in {{{candidates}}}"))
    for b in sizes:
        report.rows.append(Row("4 best k by batch", f"best_k/8b-eagle/B={b}/any-k", cal.name, "best k, k in 0..7",
                               free[b], None, "k", None, "", "not published: the PR's schedule never uses k = 1"))
    low = all(ks[b] >= 2 for b in sizes if b <= 16)
    high = [b for b in sizes if b >= 256]
    report.checks.append(Check("k-table: k >= 2 up to batch 16", low,
                               f"{cal.name}: " + ", ".join(f"B={b}: {ks[b]}" for b in sizes if b <= 16)))
    report.checks.append(Check("k-table: k = 0 from batch 256", bool(high) and all(ks[b] == 0 for b in high),
                               f"{cal.name}, k in {{{candidates}}}: " + (
                                   ", ".join(f"B={b}: {ks[b]}" for b in high) or "batch 256 outside valid_range")))


def crossover_batch(ratio: Callable[[int], float], max_batch: int) -> int | None:
    """Smallest batch from which fixed k stays slower than no speculation up to max_batch (None: never)."""
    cross = None
    for b in range(max_batch, 0, -1):
        if ratio(b) >= 1.0:
            break
        cross = b
    return cross


def seventy_b_fixed_vs_none(points: dict, cals: dict, opts: Options, report: Report) -> None:
    """Section 5: tokens/s per step of fixed k=3 over no speculation, batch 1..256, for each 70B calibration."""
    al = point(points, "tpot_vs_k/eagle1/k=3", "acceptance_length")
    tokens = expected_tokens(alpha_from_acceptance_length(al, 3), 3)
    for role in ("70b-ngram", "70b-eagle", "70b-draft"):
        cal = cals[role]
        if cal is None:
            continue
        spec, plain = engine_cost(cal, role), engine_cost(cal, role, drafter=False)
        top = min(256, cal.valid_range.max_batch_size)

        def ratio(b: int) -> float:
            ctx = opts.load_context_tokens
            return tokens * step_ms(plain, b, 0, ctx) / step_ms(spec, b, 3, ctx)

        for b in (1, 4, 16, 64, 128, 256):
            if b <= top:
                report.rows.append(Row("5 70B fixed k=3 / none", f"70b/{role}/B={b}", cal.name,
                                       "step tok/s ratio k=3/none", ratio(b), None, "x", None, "", f"AL {al:g} at k=3"))
        cross = crossover_batch(ratio, top)
        report.rows.append(Row("5 70B fixed k=3 / none", f"70b/{role}", cal.name, "crossover batch", cross, None,
                               "k", None, "", "k=3 slower from this batch on" if cross else f"never up to batch {top}"))
        report.checks.append(Check(f"70B {role}: fixed k=3 loses to no speculation at batch {top}", ratio(top) < 1.0,
                                   f"{cal.name}: ratio {ratio(top):.3f} at batch {top}; "
                                   + (f"loses from batch {cross}" if cross else "never loses up to batch " + str(top))))


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
    best_k_table(points, cals, opts, report)
    seventy_b_fixed_vs_none(points, cals, opts, report)
    return report


# ---- command line ------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise ValidationError(f"{message} (see --help)")


def _role_help() -> str:
    return "; ".join(f"{role}: {' then '.join(names)}" for role, (names, _) in ROLES.items())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _Parser(prog="validate_published.py", description=__doc__.splitlines()[0])
    p.add_argument("--calibration", action="append", default=[], metavar="ROLE=NAME|PATH",
                   help=f"use this calibration for one role (repeatable). Roles and defaults: {_role_help()}")
    p.add_argument("--context", type=int, metavar="TOKENS",
                   help=f"context tokens per request in sections 3-5 (default: Fig.4 {Options.fig4_context_tokens}, "
                        f"k-table {Options.ktable_context_tokens}, 70B {Options.load_context_tokens})")
    p.add_argument("--sim-requests", type=int, default=Options.sim_requests,
                   help="requests per simulated batch-1 run in section 1")
    p.add_argument("--quick", action="store_true", help="5 simulated requests per k (a smoke run)")
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
    opts = Options(sim_requests=5 if args.quick else args.sim_requests, overrides=overrides)
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
    return 1 if args.check and not all(c.passed for c in report.checks) else 0


if __name__ == "__main__":
    sys.exit(main())

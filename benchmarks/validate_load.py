"""Validation sections under load: the best k by batch size (vLLM PR #32374) and 70B fixed k against none.

4. the best k by batch size for EAGLE on Llama-3.1-8B (vLLM PR #32374) from `build_k_table`;
5. 70B TP4: fixed k = 3 against no speculation in tokens/s per step over batch 1..256, and the crossover.
"""
from __future__ import annotations

from typing import Callable

from specdec_sim.acceptance.rates import alpha_from_acceptance_length, expected_tokens
from specdec_sim.policies.build_table import build_k_table

from published_points import point
from validation_report import Check, Report, Row
from validation_setup import KS, KTABLE_BATCHES, Options, engine_cost, step_ms


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

"""Validation sections under load: where speculation stops paying, and what the model charges for it.

4. vLLM PR #32374: per-step ITL of Llama-3.1-8B + EAGLE-1 at batch 1-256 x K = 0, 1, 3, 5 (each cell a closed
   batch of identical requests at `Options.ktable_context_tokens` context tokens each, the MT-Bench context of
   section 1); the goodput-best K per batch (1 + the sum of the PR's per-position rates, over ITL) against the one
   the measured cells give; the schedule of K by batch size 1..256 against the author's re-profiled one;
5. 70B TP4: fixed k = 3 against no speculation in tokens/s per step over batch 1..256, and the crossover;
   vLLM #49986's direction (static k = 3 at concurrency 256 gains with context: verify tokens share their
   request's KV read) on the shipped 70B draft-model calibration; vLLM #49548's single-stream cost of dynamic k
   against the calibrations' dynamic-k tax.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from specdec_sim.acceptance.rates import (alpha_from_acceptance_length, best_uniform_k, expected_tokens,
                                          position_tokens)
from specdec_sim.costmodel import CostModel

from published_points import point
from validation_report import Check, Report, Row
from validation_setup import Options, engine_cost, rel_error, step_ms

PR_BATCHES, PR_KS = (1, 4, 16, 64, 256), (0, 1, 3, 5)
STEP_MAPE_PCT = 5.0  # done-when tolerance of the #32374 cells (issue 20)
SCHEDULE_KS = tuple(range(6))  # the schedule chooses among k = 0..5 (the PR's cells go to K = 5)
CONTEXTS_49986 = (400, 900, 1900, 4000)


def pr_rates(points: dict) -> tuple[float, ...]:
    return tuple(point(points, "load/vllm32374/rates", f"rate_pos{i}") for i in range(1, 6))


def best_k(step: Callable[[int], float], rates: tuple[float, ...], batch: int, ks) -> int:
    """argmax over ks of batch x tokens(k) / step(k) (ties to the smaller k): the PR's goodput rule."""
    return best_uniform_k(step, 0.0, batch, ks, lambda _alpha, k: position_tokens(rates, k))


def schedule(best: Callable[[int], int], max_batch: int = 256) -> list[tuple[int, int, int]]:
    """[(first batch, last batch, k), ...] of best(b) over b = 1..max_batch."""
    rows: list[list[int]] = []
    for b in range(1, max_batch + 1):
        k = best(b)
        if rows and rows[-1][2] == k:
            rows[-1][1] = b
        else:
            rows.append([b, b, k])
    return [tuple(r) for r in rows]  # type: ignore[misc]


def last_batch_with(rows: list[tuple[int, int, int]], k_at_least: int) -> int:
    """The largest batch whose k is >= k_at_least (0 if none)."""
    return max((hi for _, hi, k in rows if k >= k_at_least), default=0)


def table_best(points: dict, rates: tuple[float, ...], batch: int) -> int:
    """The best K the measured cells give at `batch`."""
    return best(lambda k: point(points, f"load/vllm32374/B={batch}/K={k}", "itl"), rates, batch)


def best(step: Callable[[int], float], rates: tuple[float, ...], batch: int) -> int:
    return best_k(step, rates, batch, PR_KS)


def vllm32374(points: dict, cals: dict, opts: Options, report: Report) -> None:
    """Section 4: the 20 cells, best K per batch, and the schedule."""
    cal = cals["8b-eagle"]
    if cal is None:
        return
    cost, ctx, rates = engine_cost(cal, "8b-eagle"), opts.ktable_context_tokens, pr_rates(points)
    errors = []
    for b in PR_BATCHES:
        for k in PR_KS:
            measured = point(points, f"load/vllm32374/B={b}/K={k}", "itl")
            predicted = step_ms(engine_cost(cal, "8b-eagle", drafter=k > 0), b, k, ctx)
            errors.append(rel_error(predicted, measured))
            report.rows.append(Row("4 #32374 ITL", f"load/vllm32374/B={b}/K={k}", cal.name, "step ms", predicted,
                                   measured, "ms", errors[-1], "%", f"context {ctx}"))
    mape = float(np.mean(np.abs(errors)))
    report.rows.append(Row("4 #32374 ITL", "load/vllm32374", cal.name, "MAPE over 20 cells", mape, None, "%", None, "",
                           f"max {max(np.abs(errors)):.1f} %"))
    report.checks.append(Check(f"#32374 per-step MAPE <= {STEP_MAPE_PCT:g} %", mape <= STEP_MAPE_PCT,
                               f"{cal.name}: {mape:.2f} % (max {max(np.abs(errors)):.1f} %) over B x K = 5 x 4"))
    model, wanted = {}, {}
    for b in PR_BATCHES:
        model[b] = best(lambda k: step_ms(cost, b, k, ctx), rates, b)
        wanted[b] = table_best(points, rates, b)
        report.rows.append(Row("4 #32374 best K", f"load/vllm32374/B={b}", cal.name, "best K of 0,1,3,5", model[b],
                               wanted[b], "k", model[b] - wanted[b], "", "measured: from the cells, same rule"))
    report.checks.append(Check("#32374 best K equal at batch 1/4/16/64/256", model == wanted,
                               f"{cal.name}: " + ", ".join(f"B={b}: {model[b]}/{wanted[b]}" for b in PR_BATCHES)))
    ours = schedule(lambda b: best_k(lambda k: step_ms(cost, b, k, ctx), rates, b, SCHEDULE_KS))
    text = " ".join(f"{lo}-{hi}:{k}" for lo, hi, k in ours)
    for k, metric in ((3, "k3_last_batch"), (2, "k2_last_batch"), (1, "k1_last_batch")):
        published = point(points, "load/vllm32374/schedule", metric)
        last = last_batch_with(ours, k)
        report.rows.append(Row("4 #32374 schedule", f"load/vllm32374/schedule/k>={k}", cal.name,
                               f"last batch with k >= {k}", last, published, "batch", last - published, "",
                               f"ours {text}; re-profiled 1-64:3 65-101:2 102-165:1 166-256:0"))
    stop = last_batch_with(ours, 1)
    published_stop = point(points, "load/vllm32374/schedule", "k1_last_batch")
    report.checks.append(Check("#32374 schedule stops speculating within 20 % of the re-profiled batch",
                               abs(stop / published_stop - 1) <= 0.2,
                               f"{cal.name}: k = 0 from batch {stop + 1} (re-profiled {published_stop + 1:g}); {text}"))


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


def context_direction(points: dict, cals: dict, report: Report) -> None:
    """#49986's direction on the shipped 70B draft-model calibration: the k = 3 / none throughput ratio rises with
    context, at the largest batch (up to 256) whose 4000-token contexts fit the calibration's valid range (111 for
    the 70B TP4 ones); its acceptance is not published: the #20780 EAGLE-1 AL at k = 3 stands in."""
    cal = cals["70b-draft"]
    if cal is None:
        return
    al = point(points, "tpot_vs_k/eagle1/k=3", "acceptance_length")
    spec, plain = engine_cost(cal, "70b-draft"), engine_cost(cal, "70b-draft", drafter=False)
    batch = min(256, cal.valid_range.max_batch_size, cal.valid_range.max_context_tokens // max(CONTEXTS_49986))
    ratios = []
    for ctx in CONTEXTS_49986:
        ours = al * step_ms(plain, batch, 0, ctx) / step_ms(spec, batch, 3, ctx)
        theirs = (point(points, f"load/vllm49986/ctx={ctx}", "output_throughput_k3")
                  / point(points, f"load/vllm49986/ctx={ctx}", "output_throughput_k0"))
        ratios.append(ours)
        report.rows.append(Row("5 #49986 context", f"load/vllm49986/ctx={ctx}", cal.name,
                               f"k=3 / none tok/s at batch {batch}", ours, theirs, "x", None, "",
                               "direction only: gemma-4-31B FP8 measured, Llama-3-70B TP4 modelled"))
    rising = all(b > a for a, b in zip(ratios, ratios[1:]))
    report.checks.append(Check("#49986: speculation's relative value rises with context at saturation", rising,
                               f"{cal.name}, batch {batch}: " + ", ".join(f"{c}: {r:.3f}x"
                                                                          for c, r in zip(CONTEXTS_49986, ratios))))


def dynamic_k_tax(points: dict, cals: dict, opts: Options, report: Report) -> None:
    """#49548: PIECEWISE graphs cost a single stream 16 % of its throughput (19 % more time per step); the
    calibrations' dynamic-k tax at batch 1, k = 2 (its setting), is reported beside it (a different model: a
    cross-check of size, not a fit)."""
    full = point(points, "load/vllm49548", "output_throughput_full")
    piecewise = point(points, "load/vllm49548", "output_throughput_piecewise")
    measured = (full / piecewise - 1) * 100
    for role in ("8b-eagle", "70b-eagle"):
        cal = cals[role]
        if cal is None:
            continue
        static = step_ms(engine_cost(cal, role), 1, 2, opts.ktable_context_tokens)
        dynamic = step_ms(CostModel(engine_cost(cal, role).calibration, dynamic_k=True), 1, 2,
                          opts.ktable_context_tokens)
        ours = (dynamic / static - 1) * 100
        report.rows.append(Row("5 #49548 dynamic-k tax", f"load/vllm49548/{role}", cal.name,
                               "step time added at batch 1, k=2", ours, measured, "%", ours - measured, "pp",
                               "measured on Qwen3.5-122B MTP; fitted here from the legacy/current engine levels"))


def load_sections(points: dict, cals: dict, opts: Options, report: Report) -> None:
    vllm32374(points, cals, opts, report)
    seventy_b_fixed_vs_none(points, cals, opts, report)
    context_direction(points, cals, report)
    dynamic_k_tax(points, cals, opts, report)

"""Build a vLLM `num_speculative_tokens_per_batch_size` table by goodput (smartspec-reference.md 6.1 iv, 1.1, 1.4).

For every batch size B, K(B) = argmax over k in 0..max_k of B*l(alpha, k) / T_step(uniform_shape(B, B*ctx, k))
(policies/goodput.py), then equal neighbours are merged into [[start_bs, end_bs, K], ...]: the JSON that the
`vllm-table` policy reads from a file (`table=FILE.json`), or the same rows inline (`table=1-23:4;24-35:3;...`).

    build-k-table --calibration turbospec-llama3-8b-eagle-h100 --alpha 0.7 --context 512 --max-k 7 --out table.json
    build-k-table --position-rates 0.681,0.391,0.204,0.101,0.051 --context 384 --max-batch 256   # vLLM's per-position
    simulate ... --policy vllm-table:table=table.json

By default the table covers batch sizes 1..1024, the largest running batch a vLLM V1 engine schedules
(`max_num_seqs` 1024 on H100-class GPUs, 256 on others and in V0); `vllm-table` refuses a table that stops
below the engine's `max_num_seqs` rather than run larger batches at K = 0. The table is written to a
temporary name and renamed into place, and the line printed says how to run it; `--version` prints the
package version; a bad option is one `build-k-table: error:` line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Sequence

import specdec_sim
from specdec_sim.costmodel import DEFAULT_CALIBRATION, CalibrationError, CostModel, load_calibration
from specdec_sim.cli_support import OneLineParser, fail
from specdec_sim.safe_output import write_text_atomic

from specdec_sim.acceptance.rates import best_uniform_k as best_k_by_goodput
from specdec_sim.acceptance.rates import position_tokens
from specdec_sim.costmodel import uniform_shape
from specdec_sim.policies.goodput import best_uniform_k


def build_k_table(cost: CostModel, alpha: float, context_tokens: int, max_k: int,
                  batch_sizes: Sequence[int], candidates: Sequence[int] | None = None,
                  position_rates: Sequence[float] | None = None) -> list[list[int]]:
    """[[start_bs, end_bs, K], ...]: each listed size b covers b..(next listed size - 1), the last only itself.
    With `position_rates` (unconditional per-position acceptance, as vLLM reports it) a request emits
    1 + the first k rates in a step proposing k, as vLLM PR #32374's profiler counts them; else i.i.d. alpha."""
    sizes = sorted(set(int(b) for b in batch_sizes))
    if not sizes or sizes[0] < 1:
        raise ValueError("batch sizes must be >= 1")
    rows: list[list[int]] = []
    for i, b in enumerate(sizes):
        end = sizes[i + 1] - 1 if i + 1 < len(sizes) else b
        if position_rates is None:
            k = best_uniform_k(cost, alpha, b, context_tokens, max_k, candidates=candidates)
        else:
            k = best_k_by_position(cost, position_rates, b, context_tokens,
                                   range(max_k + 1) if candidates is None else candidates)
        if rows and rows[-1][2] == k:
            rows[-1][1] = end
        else:
            rows.append([b, end, k])
    return rows


DEFAULT_MAX_BATCH = 1024  # vLLM V1's max_num_seqs on H100-class GPUs: the largest batch an engine runs by default


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="build-k-table", description=__doc__.splitlines()[0],
                      epilog="Run the table with: simulate --policy vllm-table:table=FILE.json (the --out file), or "
                             "inline as vllm-table:table=START-END:K;START-END:K;...")
    p.add_argument("--version", action="version", version=f"build-k-table {specdec_sim.__version__}")
    p.add_argument("--calibration", default=DEFAULT_CALIBRATION, help="shipped calibration name or JSON path "
                   f"(default: {DEFAULT_CALIBRATION})")
    p.add_argument("--alpha", type=float, default=0.7, help="per-token acceptance rate in [0, 1]")
    p.add_argument("--context", type=int, default=512, help="context tokens per request")
    p.add_argument("--max-k", type=int, default=7, help="largest K to consider")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"the table covers batch sizes 1..N (default {DEFAULT_MAX_BATCH}: vLLM V1's max_num_seqs on "
                        "H100-class GPUs; a vllm-table that stops below the engine's max_num_seqs is refused)")
    p.add_argument("--candidates", default=None, metavar="K1,K2,...",
                   help="only these proposal lengths (e.g. 0,2,3: the values a deployment allows; default 0..max-k)")
    p.add_argument("--position-rates", default=None, metavar="R1,R2,...",
                   help="unconditional per-position acceptance rates (vLLM's per-position acceptance: accepted at "
                        "position i over drafts) instead of --alpha; --max-k is capped at their number")
    p.add_argument("--out", default="-", help="output JSON path, for --policy vllm-table:table=FILE ('-' = stdout)")
    return p


def best_k_by_position(cost: CostModel, rates: Sequence[float], batch: int, context_tokens: int,
                       ks: Sequence[int]) -> int:
    """argmax over ks of batch x (1 + the first k rates) / step time (ties to the smaller k)."""
    def step_time_s(k: int) -> float:
        return cost.step_time_s(uniform_shape(batch, batch * context_tokens, k))

    return best_k_by_goodput(step_time_s, 0.0, batch, ks, lambda _alpha, k: position_tokens(rates, k))


def parse_position_rates(text: str) -> tuple[float, ...]:
    """'0.68,0.39,0.20' -> rates, each in [0, 1] and not rising with position; ValueError naming the problem."""
    try:
        rates = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--position-rates {text!r}: give comma-separated numbers, e.g. 0.68,0.39,0.20") from None
    if not rates or not all(math.isfinite(r) and 0.0 <= r <= 1.0 for r in rates):
        raise ValueError(f"--position-rates {text!r}: each rate must be in [0, 1]")
    if any(b > a for a, b in zip(rates, rates[1:])):
        raise ValueError(f"--position-rates {text!r}: unconditional rates cannot rise with position")
    return rates


def _fail(message: str) -> int:
    return fail("build-k-table", message)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not (math.isfinite(args.alpha) and 0.0 <= args.alpha <= 1.0):
        return _fail(f"--alpha {args.alpha} must be in [0, 1]")
    if args.context < 0 or not 0 <= args.max_k <= 64 or not 1 <= args.max_batch <= 100_000:
        return _fail("--context must be >= 0, --max-k in 0..64, --max-batch in 1..100000")
    candidates = None
    if args.candidates is not None:
        try:
            candidates = sorted({int(v) for v in args.candidates.split(",") if v.strip()})
        except ValueError:
            return _fail(f"--candidates {args.candidates!r}: give comma-separated integers, e.g. 0,2,3")
        if not candidates or min(candidates) < 0 or max(candidates) > args.max_k:
            return _fail(f"--candidates {args.candidates!r}: values must be in 0..--max-k ({args.max_k})")
    rates, max_k = None, args.max_k
    if args.position_rates is not None:
        try:
            rates = parse_position_rates(args.position_rates)
        except ValueError as exc:
            return _fail(str(exc))
        max_k = min(max_k, len(rates))
        if candidates is not None and max(candidates) > len(rates):
            return _fail(f"--candidates {args.candidates!r}: k beyond the {len(rates)} --position-rates given")
    try:
        cost = CostModel(load_calibration(args.calibration))
    except CalibrationError as exc:
        return _fail(str(exc))
    table = build_k_table(cost, args.alpha, args.context, max_k, range(1, args.max_batch + 1), candidates, rates)
    text = json.dumps(table)
    if args.out == "-":
        print(text)
        return 0
    try:
        write_text_atomic(args.out, text + "\n")
    except OSError as exc:
        return _fail(f"--out {args.out}: {exc.strerror or exc}")
    print(f"wrote {len(table)} ranges to {args.out}: {text}; run it with --policy vllm-table:table={args.out} "
          f"(inline: vllm-table:table={inline_table(table)})")
    return 0


def inline_table(table: list[list[int]]) -> str:
    """The rows as `vllm-table`'s inline form: `1-23:4;24-35:3;36-1024:2`."""
    return ";".join(f"{start}-{end}:{k}" for start, end, k in table)


if __name__ == "__main__":
    sys.exit(main())

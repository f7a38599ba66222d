"""Where speculation stops paying: the batch from which fixed k loses to no speculation, per shipped calibration.

    python benchmarks/where_speculation_stops.py                 # the table in README (under a second)
    python benchmarks/where_speculation_stops.py --alpha 0.8 --context 2048

For each calibration (V1 and V0 generations of the 8B and 70B settings) and each k, the step throughput of a closed
batch of B identical decoding requests (`--context` tokens each) proposing k, in expected emitted tokens per second
(1 + alpha + ... + alpha^k per request, i.i.d. acceptance `--alpha`), over the same batch without speculation; the
crossover is the smallest batch from which fixed k stays slower, up to the calibration's batch limit (256). The
static policies (none, fixed:k) pay no dynamic-k tax; `--dynamic-k` prices k as a policy that varies it would
(PIECEWISE CUDA graphs in V1). Steps are priced by the simulator's own cost model; nothing is fitted here.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from specdec_sim.acceptance.rates import expected_tokens
from specdec_sim.costmodel import CostModel, load_calibration, step_shape
from specdec_sim.simulator.prepared import priced_for_style

# (calibration, drafting style): the default 8B setting, and the settings that have a V0 build
SETTINGS = (("llama3.1-8b-eagle-h100", "draft"), ("llama3.1-8b-ngram-h100", "ngram"),
            ("llama3.1-8b-ngram-h100-v0", "ngram"), ("llama3.1-8b-draft1b-h100", "draft"),
            ("llama3.1-8b-draft1b-h100-v0", "draft"), ("llama3-70b-tp4-ngram-h100", "ngram"),
            ("llama3-70b-tp4-ngram-h100-v0", "ngram"), ("llama3-70b-tp4-eagle-h100", "draft"))
KS = (1, 2, 3, 4)
MAX_BATCH = 256


def step_ratio(spec: CostModel, plain: CostModel, batch: int, k: int, alpha: float, context: int) -> float:
    """Expected tokens/s of a batch proposing k over the same batch without speculation."""
    kv = batch * context
    with_k = expected_tokens(alpha, k) / spec.step_time_s(step_shape([k] * batch, kv))
    return with_k / (1.0 / plain.step_time_s(step_shape([0] * batch, kv)))


def crossover(spec: CostModel, plain: CostModel, k: int, alpha: float, context: int, top: int) -> int | None:
    """Smallest batch from which k stays slower than no speculation up to `top` (None: never)."""
    cross = None
    for b in range(top, 0, -1):
        if step_ratio(spec, plain, b, k, alpha, context) >= 1.0:
            break
        cross = b
    return cross


def rows(alpha: float, context: int, dynamic_k: bool) -> list[dict]:
    out = []
    for name, style in SETTINGS:
        cal = priced_for_style(load_calibration(name), style)
        spec, plain = CostModel(cal, dynamic_k=dynamic_k), CostModel(cal, drafter=False)
        top = min(MAX_BATCH, cal.valid_range.max_batch_size)
        row = {"calibration": name, "engine": cal.engine, "batch 1 speedup k=3":
               step_ratio(spec, plain, 1, 3, alpha, context)}
        for k in KS:
            row[f"k={k} loses from batch"] = crossover(spec, plain, k, alpha, context, top)
        out.append(row)
    return out


def markdown(table: list[dict]) -> str:
    keys = list(table[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in table:
        cells = [f"{v:.2f}x" if isinstance(v, float) else ("never" if v is None else str(v)) for v in r.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alpha", type=float, default=0.7, help="per-token acceptance (default 0.7)")
    p.add_argument("--context", type=int, default=1024, help="context tokens per request (default 1024)")
    p.add_argument("--dynamic-k", action="store_true", help="price speculation as a policy that varies k")
    args = p.parse_args(argv)
    if not 0.0 <= args.alpha < 1.0 or args.context < 1:
        p.error("--alpha must be in [0, 1) and --context >= 1")
    print(markdown(rows(args.alpha, args.context, args.dynamic_k)))
    print(f"(alpha {args.alpha:g}, {args.context} context tokens per request, "
          f"{'dynamic-k tax charged' if args.dynamic_k else 'static k: no dynamic-k tax'}; 'never': up to batch "
          f"{MAX_BATCH})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

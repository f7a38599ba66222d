"""Speed of `measure-acceptance`'s span computations on synthetic requests (one core for n-gram lookup).

N-gram prompt lookup (issue 10 asks for 300 requests of 1k-token prompts and 1k-token outputs in under
5 s) and, with torch installed, a draft model's greedy spans (one teacher-forced forward per batch):

    python benchmarks/measure_acceptance_speed.py                      # n-gram, 300 x (1k + 1k)
    python benchmarks/measure_acceptance_speed.py --requests 10000     # the issue's "10k in seconds"
    python benchmarks/measure_acceptance_speed.py --draft tiny-draft --device cpu --draft-requests 32

Outputs copy stretches of their prompt (half the output) so the lookup has runs to find. Timings are
wall-clock medians of --repeats runs, printed; nothing is written.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def synthetic_requests(count: int, prompt_tokens: int, output_tokens: int, vocab: int, seed: int):
    """(prompt, output) pairs: the output's second half copies a random stretch of the prompt."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        prompt = rng.integers(0, vocab, prompt_tokens)
        copy = min(output_tokens // 2, prompt_tokens)
        start = int(rng.integers(0, prompt_tokens - copy + 1))
        output = np.concatenate([rng.integers(0, vocab, output_tokens - copy), prompt[start:start + copy]])
        pairs.append((prompt, output))
    return pairs


def time_ngram(pairs, lookup_min: int, lookup_max: int, k: int, repeats: int) -> tuple[float, float]:
    from specdec_sim.acceptance.ngram_spans import NgramSettings, ngram_spans
    settings = NgramSettings(lookup_min, lookup_max, k)
    seconds, mean_span = [], 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        spans = [ngram_spans(p, o, settings) for p, o in pairs]
        seconds.append(time.perf_counter() - t0)
        mean_span = float(np.mean(np.concatenate(spans)))
    return statistics.median(seconds), mean_span


def time_draft(pairs, draft: str, device: str, k: int, batch_tokens: int) -> float:
    import torch
    from specdec_sim.profiler.acceptance_spans import DraftProfiler, TokenRequest, batches
    from specdec_sim.profiler.models import build_model
    dtype = "bf16" if device.startswith("cuda") else "fp32"
    model = build_model(draft, device, dtype)
    vocab = model.config.vocab_size
    reqs = [TokenRequest(str(i), p % vocab, o % vocab) for i, (p, o) in enumerate(pairs)]
    profiler = DraftProfiler(None, model, device, k)
    profiler.spans(reqs[:1])  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for group in batches(reqs, batch_tokens, 0):
        profiler.spans(group)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--prompt-tokens", type=int, default=1000)
    p.add_argument("--output-tokens", type=int, default=1000)
    p.add_argument("--vocab", type=int, default=128_000)
    p.add_argument("--prompt-lookup-min", type=int, default=1)
    p.add_argument("--prompt-lookup-max", type=int, default=4)
    p.add_argument("--max-k", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draft", default=None, help="also time a draft model (bundled name or config directory)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--draft-requests", type=int, default=32)
    p.add_argument("--batch-tokens", type=int, default=16384)
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the budget says
    pairs = synthetic_requests(args.requests, args.prompt_tokens, args.output_tokens, args.vocab, args.seed)
    seconds, mean_span = time_ngram(pairs, args.prompt_lookup_min, args.prompt_lookup_max, args.max_k, args.repeats)
    tokens = args.requests * args.output_tokens
    print(f"ngram lookup ({args.prompt_lookup_min}..{args.prompt_lookup_max}, k={args.max_k}): {args.requests} "
          f"requests x ({args.prompt_tokens} + {args.output_tokens}) tokens in {seconds:.3f} s on one core "
          f"({tokens / seconds / 1e6:.2f} M output positions/s, mean span {mean_span:.3f})")
    if args.draft:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        count = min(args.draft_requests, len(pairs))
        seconds = time_draft(pairs[:count], args.draft, args.device, args.max_k, args.batch_tokens)
        print(f"draft {args.draft} on {args.device}: {count} requests x ({args.prompt_tokens} + "
              f"{args.output_tokens}) tokens in {seconds:.3f} s ({count * args.output_tokens / seconds:,.0f} "
              "output positions/s)")


if __name__ == "__main__":
    main()

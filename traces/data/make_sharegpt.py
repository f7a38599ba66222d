"""Regenerate the SpecDecode-Bench-derived bundled traces (lengths only) from the shared data.

    python traces/data/make_sharegpt.py PATH/TO/specdecode_bench [--out traces/data]

``PATH/TO/specdecode_bench`` holds ``{sharegpt,cnn,gsm8k,instructcoder}.eagle.jsonl.gz``
(SpecDecode-Bench, Llama-3.1-8B-Instruct outputs; see traces/data/SOURCE.md). Only the
``prompt_tokens`` / ``output_tokens`` figures of each record are used: no text, no spans.
Writes one lengths-only CSV per dataset (rows in source ``id`` order) and the ShareGPT-like
trace: ``NUM_REQUESTS`` pairs resampled with replacement (seed ``SEED``) from the real ShareGPT
pairs, Poisson arrivals at ``RATE`` req/s, in the normalized schema. Prints length statistics.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = {  # dataset -> bundled lengths file
    "sharegpt": "sharegpt_llama31_8b_lengths.csv",
    "cnn": "cnn_dailymail_llama31_8b_lengths.csv",
    "gsm8k": "gsm8k_llama31_8b_lengths.csv",
    "instructcoder": "instructcoder_llama31_8b_lengths.csv",
}
TRACE_FILE = "sharegpt_llama31_8b_5k_poisson10.csv"
NUM_REQUESTS = 5000
RATE = 10.0  # req/s, Poisson
SEED = 0
PROPOSER = "eagle"  # the EAGLE run's outputs (the n-gram run's differ slightly)


def read_pairs(source_dir: Path, dataset: str) -> pd.DataFrame:
    """(prompt_tokens, output_tokens) of every record, sorted by the source ``id``."""
    rows = []
    with gzip.open(source_dir / f"{dataset}.{PROPOSER}.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                rows.append((record["id"], int(record["prompt_tokens"]), int(record["output_tokens"])))
    frame = pd.DataFrame(rows, columns=["id", "prompt_tokens", "output_tokens"]).sort_values("id", kind="stable")
    return frame[["prompt_tokens", "output_tokens"]].reset_index(drop=True)


def sharegpt_like(pairs: pd.DataFrame) -> pd.DataFrame:
    """The resampled trace in the normalized schema (arrival times rounded to 1 us)."""
    from specdec_sim.traces import Trace, synthetic_trace

    lengths = Trace(np.arange(len(pairs)), np.zeros(len(pairs)), pairs["prompt_tokens"], pairs["output_tokens"],
                    "sharegpt lengths")
    frame = synthetic_trace(RATE, num_requests=NUM_REQUESTS, lengths_from=lengths, seed=SEED).to_frame()
    frame["arrival_time_s"] = frame["arrival_time_s"].round(6)
    return frame


def stats(frame: pd.DataFrame) -> str:
    """'prompt mean / p50 / p99 | output mean / p50 / p99' as in SOURCE.md."""
    parts = []
    for column in ("prompt_tokens", "output_tokens"):
        values = frame[column].to_numpy()
        p50, p99 = np.percentile(values, [50, 99])
        parts.append(f"{values.mean():.1f} / {p50:g} / {p99:.0f}")
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source_dir", type=Path, help="the specdecode_bench folder of the shared data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    args = parser.parse_args(argv)
    real = {dataset: read_pairs(args.source_dir, dataset) for dataset in DATASETS}
    for dataset, file_name in DATASETS.items():
        real[dataset].to_csv(args.out / file_name, index=False)
        print(f"{file_name}: {len(real[dataset])} rows, {stats(real[dataset])}")
    trace = sharegpt_like(real["sharegpt"])
    trace.to_csv(args.out / TRACE_FILE, index=False)
    span = trace["arrival_time_s"].iloc[-1]
    print(f"{TRACE_FILE}: {len(trace)} rows, span {span:.1f} s, {len(trace) / span:.2f} req/s, {stats(trace)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

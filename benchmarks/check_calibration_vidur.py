"""Check the shipped H100 calibration against independent real GPU kernel timings (Vidur).

`profiles/vidur/linear_ops_per_layer.csv` holds, per GPU and model, the sum of the median
per-layer times of every non-attention op (QKV and output projections, gate/up and down GEMMs,
activation, norms, rotary, residual add) measured by the Vidur authors at tensor parallelism 1
(see `profiles/vidur/SOURCE.md`). Times 32 layers, that is the dense part of a forward pass
against the number of batched tokens. This script fits it with the profiler's knee fit and
prints it beside the shipped `turbospec-llama3-8b-eagle-h100` coefficients, which were fitted by the
TurboSpec authors on a different setup (whole steps, Llama-3-8B, vLLM V1):

    python benchmarks/check_calibration_vidur.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from specdec_sim.profiler.measure_fit import Samples, fit_forward, predict_ms
from specdec_sim.costmodel import load_calibration

DATA = Path(__file__).resolve().parents[1] / "profiles" / "vidur" / "linear_ops_per_layer.csv"
NUM_LAYERS = 32


def dense_forward_samples(frame: pd.DataFrame) -> Samples:
    tokens = frame["num_tokens"].to_numpy(dtype=float)
    zeros = np.zeros_like(tokens)
    return Samples(batched=tokens, kv=zeros, seqs=zeros, attn2=zeros,
                   ms=frame["layer_linear_ops_ms"].to_numpy() * NUM_LAYERS)


def main() -> None:
    data = pd.read_csv(DATA)
    shipped = load_calibration("turbospec-llama3-8b-eagle-h100").target
    print(f"shipped turbospec-llama3-8b-eagle-h100 (whole step, linear fit): fixed {shipped.fixed_ms:.2f} ms, "
          f"{shipped.per_batched_token_ms * 1000:.1f} us/token, no knee")
    for (gpu, model), frame in data.groupby(["gpu", "model"], sort=False):
        samples = dense_forward_samples(frame.sort_values("num_tokens"))
        coef = fit_forward(samples)
        ape = np.abs(predict_ms(coef, samples) / samples.ms - 1) * 100
        slope_after = (coef.per_batched_token_ms + coef.after_knee_ms) * 1000
        print(f"Vidur {gpu} {model} dense ops x{NUM_LAYERS} layers: fixed {coef.fixed_ms:.2f} ms, "
              f"{coef.per_batched_token_ms * 1000:.1f} us/token up to a knee at {coef.knee_tokens:.0f} tokens, "
              f"{slope_after:.1f} us/token after it (fit error mean {ape.mean():.1f} %, max {ape.max():.1f} %)")
        for tokens in (1, 64, 256, 1024, 4096):
            row = frame.iloc[(frame["num_tokens"] - tokens).abs().argmin()]
            print(f"    {int(row.num_tokens):5d} tokens: measured {row.layer_linear_ops_ms * NUM_LAYERS:7.2f} ms")


if __name__ == "__main__":
    main()

"""Shared by the profile-gpu tests: the tiny-model command line, small grids, fake timings, one-line errors."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

TINY = ["--target", "tiny-llama", "--draft", "tiny-draft", "--device", "cpu", "--threads", "1",
        "--warmup", "0", "--repeats", "1", "--quiet"]
SMALL_GRID = ["--grid", "quick", "--batch-sizes", "1,2,4", "--query-tokens", "1,3",
              "--context-lengths", "8,32", "--prefill-chunks", "16"]


def read_rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


# fake timings: deterministic values, no live clock
NINE_POINTS = ["--grid", "quick", "--batch-sizes", "1,2,4", "--query-tokens", "1,2", "--context-lengths", "8",
               "--prefill-chunks", "none"]


def fake_timing(noise: float = 0.0):
    """A time_forward stand-in: 1 ms + 0.1 ms per batched token + 1 us per KV token, times a seeded
    noise factor in [1 - noise, 1 + noise] that depends only on the shape."""
    from specdec_sim.profiler.measure_timing import Timing

    def timed(model, batch, query, context, *args, **kwargs):
        jitter = np.random.default_rng(batch * 1000 + query * 10 + context).uniform(1 - noise, 1 + noise)
        ms = (1.0 + 0.1 * batch * query + 1e-3 * batch * context) * jitter
        return Timing(ms, ms, ms, 1)

    return timed


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err

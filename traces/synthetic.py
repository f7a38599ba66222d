"""Synthetic request traces: Poisson or Gamma (bursty) arrivals, fixed or resampled lengths.

Inter-arrival gaps are Gamma-distributed with shape ``burstiness`` and mean
``1/rate`` (scale ``1/(rate*burstiness)``), as vLLM's ``--burstiness``:
1.0 is a Poisson process, < 1 is burstier (CV^2 = 1/burstiness), > 1 smoother.
Everything is vectorised numpy, so a million requests take well under a second.
"""
from __future__ import annotations

import numbers

import numpy as np

from specdec_sim.traces.model import MAX_TIME_S, Trace, TraceError
from specdec_sim.traces.readers import positive_int, positive_number

MAX_SYNTHETIC_REQUESTS = 50_000_000  # ~1.6 GB of arrays; beyond this is surely a typo


def synthetic_trace(rate: float, num_requests: int | None = None, duration_s: float | None = None,
                    burstiness: float = 1.0, prompt_tokens: int = 512, output_tokens: int = 128,
                    lengths_from: Trace | None = None, seed: int = 0) -> Trace:
    """A seeded synthetic trace with its first arrival at 0.

    Give exactly one of ``num_requests`` (that many requests) or ``duration_s``
    (all arrivals < duration_s). Token lengths are fixed (``prompt_tokens``,
    ``output_tokens``) or, with ``lengths_from``, (prompt, output) pairs drawn
    with replacement from that trace. Arrivals are drawn before lengths.
    """
    rate = positive_number("rate", rate)
    burstiness = positive_number("burstiness", burstiness)
    _check_count_options(rate, num_requests, duration_s)
    lengths = _check_lengths(prompt_tokens, output_tokens, lengths_from)
    rng = np.random.default_rng(_check_seed(seed))
    if num_requests is not None:
        arrival = _arrivals_count(rng, rate, burstiness, int(num_requests))
    else:
        arrival = _arrivals_until(rng, rate, burstiness, float(duration_s))
    _check_arrivals(arrival, rate, burstiness)
    prompt, output = _lengths(rng, len(arrival), lengths, prompt_tokens, output_tokens)
    return Trace(request_id=np.arange(len(arrival), dtype=np.int64), arrival_s=arrival,
                 prompt_tokens=prompt, output_tokens=output,
                 source=_describe(rate, burstiness, seed, prompt_tokens, output_tokens, lengths_from))


def _check_count_options(rate: float, num_requests: int | None, duration_s: float | None) -> None:
    if (num_requests is None) == (duration_s is None):
        raise TraceError("synthetic_trace: give exactly one of options num_requests and duration_s")
    if num_requests is not None:
        expected = positive_int("num_requests", num_requests)
        span = (expected - 1) / rate
    else:
        span = positive_number("duration_s", duration_s)
        expected = rate * span
    if expected > MAX_SYNTHETIC_REQUESTS:
        raise TraceError(f"synthetic_trace: options ask for about {expected:.3g} requests, "
                         f"more than the limit of {MAX_SYNTHETIC_REQUESTS}")
    if span > MAX_TIME_S:
        given = f"num_requests={num_requests}" if num_requests is not None else f"duration_s={duration_s:g}"
        raise TraceError(f"synthetic_trace: options rate={rate:g} and {given} span about {span:.3g} s, beyond "
                         f"{MAX_TIME_S:g} s (float seconds lose microsecond resolution)")


def _check_arrivals(arrival: np.ndarray, rate: float, burstiness: float) -> None:
    """The drawn arrivals must be finite and within MAX_TIME_S (a random tail can pass the expected span)."""
    if len(arrival) and not (np.isfinite(arrival[-1]) and arrival[-1] <= MAX_TIME_S):
        raise TraceError(f"synthetic_trace: options rate={rate:g} and burstiness={burstiness:g} give an arrival "
                         f"at {arrival[-1]:.3g} s, beyond {MAX_TIME_S:g} s (float seconds lose microsecond "
                         f"resolution)")


def _check_lengths(prompt_tokens: int, output_tokens: int, lengths_from: Trace | None) -> Trace | None:
    if lengths_from is not None:
        if not isinstance(lengths_from, Trace):
            raise TraceError(f"option lengths_from must be a Trace, got {type(lengths_from).__name__}")
        if len(lengths_from) == 0:
            raise TraceError(f"option lengths_from is an empty trace ({lengths_from.source})")
        return lengths_from
    positive_int("prompt_tokens", prompt_tokens)
    positive_int("output_tokens", output_tokens)
    return None


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TraceError(f"option seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _gaps(rng: np.random.Generator, rate: float, burstiness: float, size: int) -> np.ndarray:
    """Gamma(shape=b, scale=1/(rate*b)) inter-arrival gaps: mean 1/rate, CV^2 = 1/b."""
    return rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=size)


def _arrivals_count(rng: np.random.Generator, rate: float, burstiness: float, n: int) -> np.ndarray:
    arrival = np.empty(n, dtype=np.float64)
    arrival[0] = 0.0
    np.cumsum(_gaps(rng, rate, burstiness, n - 1), out=arrival[1:])
    return arrival


def _arrivals_until(rng: np.random.Generator, rate: float, burstiness: float, duration: float) -> np.ndarray:
    """Arrivals in [0, duration), drawn in chunks until the clock passes ``duration``."""
    chunk = max(256, int(rate * duration * 1.05) + 256)
    parts = [np.zeros(1)]
    last = 0.0
    while last < duration:
        part = last + np.cumsum(_gaps(rng, rate, burstiness, chunk))
        parts.append(part)
        last = float(part[-1])
    arrival = np.concatenate(parts)
    return arrival[: int(np.searchsorted(arrival, duration, side="left"))]


def _lengths(rng: np.random.Generator, n: int, source: Trace | None, prompt_tokens: int,
             output_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed lengths, or (prompt, output) pairs resampled with replacement from ``source``."""
    if source is None:
        return np.full(n, int(prompt_tokens), dtype=np.int64), np.full(n, int(output_tokens), dtype=np.int64)
    picks = rng.integers(0, len(source), size=n)
    return source.prompt_tokens[picks], source.output_tokens[picks]


def _describe(rate: float, burstiness: float, seed: int, prompt_tokens: int, output_tokens: int,
              lengths_from: Trace | None) -> str:
    process = f"poisson(rate={rate:g})" if burstiness == 1.0 else f"gamma(rate={rate:g}, burstiness={burstiness:g})"
    lengths = f"lengths from {lengths_from.source}" if lengths_from is not None else \
        f"prompt={int(prompt_tokens)}, output={int(output_tokens)}"
    return f"{process}, seed={seed}, {lengths}"

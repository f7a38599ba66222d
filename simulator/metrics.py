"""Latency metrics named and defined as `vllm bench serve` defines them.

TTFT = first token - arrival; TPOT = (E2EL - TTFT) / (output_tokens - 1) for outputs > 1;
ITL = gaps between consecutive emitted chunks (one per step that emits, so a speculative step
that emits several tokens is one gap), pooled over all requests; E2EL = finish - arrival.
Percentiles use numpy's linear interpolation. ITL is pooled into a log-spaced histogram
(relative bin width 0.12 %) so memory stays bounded on million-request runs; its mean is exact.
"""
from __future__ import annotations

import math

import numpy as np

PERCENTILES = (50, 90, 99)
_BINS_PER_DECADE = 2000
_MIN_S = 1e-7
_NUM_BINS = 11 * _BINS_PER_DECADE  # 1e-7 s .. 1e4 s


class LogHistogram:
    """Pooled positive durations (seconds) in log-spaced bins: exact count, sum and sum of squares."""

    def __init__(self) -> None:
        self.counts = np.zeros(_NUM_BINS, dtype=np.int64)
        self._pending: dict[int, int] = {}
        self.total = 0.0
        self.total_sq = 0.0
        self.n = 0
        self._last_value = -1.0
        self._last_bin = 0

    def add(self, value: float, count: int = 1) -> None:
        self.n += count
        self.total += value * count
        self.total_sq += value * value * count
        if value == self._last_value:
            b = self._last_bin
        else:
            b = int(math.log10(value / _MIN_S) * _BINS_PER_DECADE) if value > _MIN_S else 0
            b = min(b, _NUM_BINS - 1)
            self._last_value, self._last_bin = value, b
        pending = self._pending
        pending[b] = pending.get(b, 0) + count

    def _flush(self) -> None:
        for b, c in self._pending.items():
            self.counts[b] += c
        self._pending.clear()

    def percentile(self, p: float) -> float:
        self._flush()
        if self.n == 0:
            return 0.0
        cum = np.cumsum(self.counts)
        rank = p / 100.0 * (self.n - 1)
        b = int(np.searchsorted(cum, rank + 1, side="left"))
        return _MIN_S * 10 ** ((b + 0.5) / _BINS_PER_DECADE)

    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def std(self) -> float:
        if not self.n:
            return 0.0
        m = self.mean()
        return math.sqrt(max(0.0, self.total_sq / self.n - m * m))


def describe_ms(name: str, values_s: np.ndarray) -> dict[str, float]:
    """mean/median/std/p90/p99 of a metric in milliseconds under vLLM key names."""
    out: dict[str, float] = {}
    if values_s.size == 0:
        values_s = np.zeros(1)
    ms = values_s * 1000.0
    out[f"mean_{name}_ms"] = float(ms.mean())
    out[f"median_{name}_ms"] = float(np.percentile(ms, 50))
    out[f"std_{name}_ms"] = float(ms.std())
    for p in PERCENTILES[1:]:
        out[f"p{p}_{name}_ms"] = float(np.percentile(ms, p))
    return out


def describe_histogram_ms(name: str, hist: LogHistogram) -> dict[str, float]:
    out = {f"mean_{name}_ms": hist.mean() * 1000.0, f"median_{name}_ms": hist.percentile(50) * 1000.0,
           f"std_{name}_ms": hist.std() * 1000.0}
    for p in PERCENTILES[1:]:
        out[f"p{p}_{name}_ms"] = hist.percentile(p) * 1000.0
    return out


def slo_good_mask(ttft_s: np.ndarray, tpot_s: np.ndarray, e2el_s: np.ndarray, slo_ms: dict[str, float]) -> np.ndarray:
    """vLLM --goodput: a request is good iff every given metric is <= its SLO (TPOT of 1-token outputs is 0)."""
    good = np.ones(ttft_s.shape, dtype=bool)
    values = {"ttft": ttft_s, "tpot": np.nan_to_num(tpot_s, nan=0.0), "e2el": e2el_s}
    for key, limit in slo_ms.items():
        good &= values[key] * 1000.0 <= limit
    return good

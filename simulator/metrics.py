"""Latency metrics named and defined as `vllm bench serve` defines them.

TTFT = first token - arrival; TPOT = (E2EL - TTFT) / (output_tokens - 1) for outputs > 1;
ITL = gaps between consecutive emitted chunks (one per step that emits, so a speculative step
that emits several tokens is one gap), pooled over the requests that finished; E2EL = finish - arrival.
Percentiles use numpy's linear interpolation. ITL is pooled into a log-spaced histogram
(relative bin width 0.12 %) so memory stays bounded on million-request runs; its mean is exact.
A metric with no samples (nothing completed, or no output longer than one token) is NaN
(null in summary.json), never a number made up from zero samples.
"""
from __future__ import annotations

import math

import numpy as np

PERCENTILES = (50, 90, 99)
_BINS_PER_DECADE = 2000
_MIN_S = 1e-7
_NUM_BINS = 11 * _BINS_PER_DECADE  # 1e-7 s .. 1e4 s
_log10 = math.log10


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
            b = int(_log10(value / _MIN_S) * _BINS_PER_DECADE) if value > _MIN_S else 0
            if b >= _NUM_BINS:
                b = _NUM_BINS - 1
            self._last_value, self._last_bin = value, b
        pending = self._pending
        pending[b] = pending.get(b, 0) + count

    def bin_of(self, value: float) -> int:
        """The bin `value` falls in (the same bin `add` puts it in)."""
        b = int(math.log10(value / _MIN_S) * _BINS_PER_DECADE) if value > _MIN_S else 0
        return min(b, _NUM_BINS - 1)

    def remove(self, values: list[float]) -> None:
        """Take back durations added earlier (a request that never finished); counts stay exact."""
        pending = self._pending
        for value in values:
            b = self.bin_of(value)
            pending[b] = pending.get(b, 0) - 1
            self.n -= 1
            self.total -= value
            self.total_sq -= value * value
        if self.n == 0:
            self.total = self.total_sq = 0.0

    def _flush(self) -> None:
        for b, c in self._pending.items():
            self.counts[b] += c
        self._pending.clear()

    def percentile(self, p: float) -> float:
        self._flush()
        if self.n == 0:
            return math.nan
        cum = np.cumsum(self.counts)
        rank = p / 100.0 * (self.n - 1)
        b = int(np.searchsorted(cum, rank + 1, side="left"))
        return _MIN_S * 10 ** ((b + 0.5) / _BINS_PER_DECADE)

    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    def std(self) -> float:
        if not self.n:
            return math.nan
        m = self.mean()
        return math.sqrt(max(0.0, self.total_sq / self.n - m * m))


def describe_ms(name: str, values_s: np.ndarray) -> dict[str, float]:
    """mean/median/std/p90/p99 of a metric in milliseconds under vLLM key names (NaN without samples)."""
    out: dict[str, float] = {}
    if values_s.size == 0:
        return {key: math.nan for key in metric_keys(name)}
    ms = values_s * 1000.0
    out[f"mean_{name}_ms"] = float(ms.mean())
    out[f"median_{name}_ms"] = float(np.percentile(ms, 50))
    out[f"std_{name}_ms"] = float(ms.std())
    for p in PERCENTILES[1:]:
        out[f"p{p}_{name}_ms"] = float(np.percentile(ms, p))
    return out


def metric_keys(name: str) -> list[str]:
    """The summary keys describe_ms writes for `name`: mean, median, std, p90, p99 (ms)."""
    return [f"mean_{name}_ms", f"median_{name}_ms", f"std_{name}_ms"] + [f"p{p}_{name}_ms" for p in PERCENTILES[1:]]


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

"""The in-memory request trace (:class:`Trace`) and the error type of this package.

A trace is four parallel numpy arrays (one row per request, sorted by arrival)
plus a human-readable ``source``. Arrays are copied on construction and made
read-only, so a ``Trace`` can be shared freely between simulations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FRAME_COLUMNS = ("request_id", "arrival_time_s", "prompt_tokens", "output_tokens")
# float64 seconds resolve 1 us up to 2**33 s (~8.6e9 s); 1e9 s (~32 years) leaves headroom for the
# latencies the simulator adds to an arrival while still resolving 0.12 us.
MAX_TIME_S = 1e9
MAX_TOKENS = 10**8  # per request; far beyond any model's context, so a larger count is a typo or garbage


class TraceError(ValueError):
    """Bad trace input or option. The message is always a single line.

    For bad file contents it names the file, the row (1-based data row for CSV,
    1-based line number for JSONL) and the column.
    """

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def one_line(text: str) -> str:
    """Collapse line breaks so an error message stays on one line."""
    return " ".join(str(text).splitlines()) if text else ""


def _frozen_array(values: object, dtype: type, name: str, source: str) -> np.ndarray:
    """Copy ``values`` into a read-only 1-D array of ``dtype``."""
    try:
        array = np.array(values, dtype=dtype, copy=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TraceError(f"{source}: field '{name}' cannot be converted to {np.dtype(dtype)}: {exc}") from None
    if array.ndim != 1:
        raise TraceError(f"{source}: field '{name}' must be 1-D, got shape {array.shape}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests sorted by arrival: ids, arrival times (s) and token counts.

    Arrivals are finite, non-decreasing and within +-MAX_TIME_S; token counts are in
    [1, MAX_TOKENS]. ``eq=False``: traces compare by identity (numpy arrays have no scalar ``==``).
    """

    request_id: np.ndarray
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    source: str
    acceptance_id: np.ndarray | None = None  # optional: the acceptance-trace record each request replays (str)
    block_hashes: np.ndarray | None = None  # optional: per request, its prompt's block hashes (Mooncake hash_ids)
    max_tokens: np.ndarray | None = None  # optional: per request, the max_tokens the client sent
    hash_block_tokens: int = 0  # tokens per hashed block (512 in Mooncake traces); 0 without hashes

    def __post_init__(self) -> None:
        source = one_line(self.source)
        object.__setattr__(self, "source", source)
        for name, dtype in (("request_id", np.int64), ("arrival_s", np.float64),
                            ("prompt_tokens", np.int64), ("output_tokens", np.int64)):
            object.__setattr__(self, name, _frozen_array(getattr(self, name), dtype, name, source))
        if self.acceptance_id is not None:
            ids = _frozen_array([str(v) for v in self.acceptance_id], object, "acceptance_id", source)
            if len(ids) != len(self.request_id):
                raise TraceError(f"{source}: field 'acceptance_id' has {len(ids)} rows, request_id has "
                                 f"{len(self.request_id)}")
            object.__setattr__(self, "acceptance_id", ids)
        if self.max_tokens is not None:
            limit = _frozen_array(self.max_tokens, np.int64, "max_tokens", source)
            if len(limit) != len(self.request_id) or (len(limit) and limit.min() < 1):
                raise TraceError(f"{source}: field 'max_tokens' needs one value >= 1 per request")
            object.__setattr__(self, "max_tokens", limit)
        if self.block_hashes is not None:
            hashes = np.empty(len(self.block_hashes), dtype=object)
            hashes[:] = [np.asarray(h, dtype=np.int64) for h in self.block_hashes]
            if len(hashes) != len(self.request_id):
                raise TraceError(f"{source}: field 'block_hashes' has {len(hashes)} rows, request_id has "
                                 f"{len(self.request_id)}")
            if self.hash_block_tokens < 1:
                raise TraceError(f"{source}: block hashes need hash_block_tokens >= 1")
            hashes.setflags(write=False)
            object.__setattr__(self, "block_hashes", hashes)
        self._check_consistent()

    def _check_consistent(self) -> None:
        """Equal lengths, finite non-decreasing arrivals, token counts >= 1."""
        n = len(self.request_id)
        for name in ("arrival_s", "prompt_tokens", "output_tokens"):
            if len(getattr(self, name)) != n:
                raise TraceError(f"{self.source}: field '{name}' has {len(getattr(self, name))} rows, "
                                 f"request_id has {n}")
        if n == 0:
            return
        if not np.isfinite(self.arrival_s).all():
            raise TraceError(f"{self.source}: field 'arrival_s' has a non-finite value")
        if np.abs(self.arrival_s).max() > MAX_TIME_S:
            raise TraceError(f"{self.source}: field 'arrival_s' has a value beyond {MAX_TIME_S:g} s")
        if (np.diff(self.arrival_s) < 0).any():
            raise TraceError(f"{self.source}: field 'arrival_s' must be non-decreasing")
        for name in ("prompt_tokens", "output_tokens"):
            if getattr(self, name).min() < 1:
                raise TraceError(f"{self.source}: field '{name}' must be >= 1")
            if getattr(self, name).max() > MAX_TOKENS:
                raise TraceError(f"{self.source}: field '{name}' has a value above {MAX_TOKENS} tokens")

    def __len__(self) -> int:
        return int(self.request_id.shape[0])

    def to_frame(self) -> pd.DataFrame:
        """The trace in the normalized CSV schema (one row per request; `acceptance_id` last when present)."""
        frame = pd.DataFrame({
            "request_id": self.request_id,
            "arrival_time_s": self.arrival_s,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
        }, columns=list(FRAME_COLUMNS))
        if self.acceptance_id is not None:
            frame["acceptance_id"] = self.acceptance_id
        if self.max_tokens is not None:
            frame["max_tokens"] = self.max_tokens
        return frame

    def summary(self) -> dict:
        """Plain-Python statistics: count, span, rate and token-length mean/p50/p99.

        ``rate_req_s`` is ``requests / span_s`` and NaN when the span is 0
        (a single request, or a lengths-only trace). Percentiles use numpy's
        default linear interpolation. All statistics are NaN for an empty trace.
        """
        n = len(self)
        span = float(self.arrival_s[-1] - self.arrival_s[0]) if n else 0.0
        stats: dict = {
            "requests": n,
            "span_s": span,
            "rate_req_s": n / span if span > 0 else float("nan"),
        }
        for prefix, values in (("prompt", self.prompt_tokens), ("output", self.output_tokens)):
            stats.update(_length_stats(prefix, values))
        return stats


def _length_stats(prefix: str, values: np.ndarray) -> dict:
    """``{prefix}_mean``, ``{prefix}_p50``, ``{prefix}_p99`` as floats (NaN if empty)."""
    if len(values) == 0:
        return {f"{prefix}_mean": float("nan"), f"{prefix}_p50": float("nan"), f"{prefix}_p99": float("nan")}
    p50, p99 = np.percentile(values, [50, 99])
    return {f"{prefix}_mean": float(values.mean()), f"{prefix}_p50": float(p50), f"{prefix}_p99": float(p99)}


def check_enough(trace: Trace, wanted: int, option: str = "--max-requests") -> None:
    """Raise if ``trace`` has fewer than ``wanted`` requests (a replayed trace cut by ``option``).

    ``load_trace(path, max_requests=N)`` silently returns fewer than N requests when the
    file is shorter; a caller that promised N calls this right after loading.
    """
    if len(trace) < wanted:
        raise TraceError(f"{trace.source}: {option} {wanted} asks for more requests than the trace has "
                         f"({len(trace)}); ask for at most {len(trace)}, or pass --rate to replay its "
                         f"lengths with synthetic arrivals")

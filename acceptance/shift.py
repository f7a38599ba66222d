"""A request's position-rate shift, fitted so its runs are as long as the data's: mean-span matching.

Given a match below the measurement cap, draft position j survives with rate sigmoid(h_j + shift)
(acceptance/profile.py). What serving cost depends on is how many tokens a run yields, so a
request's shift is solved so that the model's mean span equals the mean of the request's own match
spans (uncensored, below the cap, after its first match), shrunk toward the requests' mean by
PRIOR_SPAN_VISITS pseudo-visits. A maximum-likelihood shift over the per-position trials instead
matches the count of surviving positions under a pooled shape that is not the request's own, and
its runs came out short (InstructCoder n-gram: 5.8 tokens per run against 6.2 in the data, so 3 %
more lookups per token and a 3 % slower serving estimate). The first match's shift offset is solved
the same way, on the first matches.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from specdec_sim.acceptance.profile import PRIOR_SPAN_VISITS, _sigmoid

MAX_SPAN_UNCAPPED = 256  # spans a model without a measurement cap is summed to (the survival is ~0 long before)


def mean_match_span(shape_logit: np.ndarray, shift: float | np.ndarray, cap: int | None) -> np.ndarray:
    """E[span | a match below the cap] for one shift or an array of them: 2 + sum over m >= 3 of P(span >= m),
    the span stopping at cap - 1 (the sampler's `top`)."""
    shifts = np.atleast_1d(np.asarray(shift, dtype=float))
    top = (cap - 1) if cap else MAX_SPAN_UNCAPPED
    positions = np.minimum(np.arange(top - 2), len(shape_logit) - 1)  # rate of reaching span m + 3 from m + 2
    rates = _sigmoid(shape_logit[positions][None, :] + shifts[:, None])
    return 2.0 + np.cumprod(rates, axis=1).sum(axis=1)


def solve_increasing(too_low: Callable[[float], bool], lo: float = -12.0, hi: float = 12.0, steps: int = 50) -> float:
    """Bisection on [lo, hi] for the point where an increasing function reaches its target: `too_low(x)` says
    it is still below at x (the nearer end if it never gets there)."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if too_low(mid) else (lo, mid)
    return (lo + hi) / 2


def _solve_shift(target: float, shape_logit: np.ndarray, cap: int | None, base: float = 0.0) -> float:
    """The shift d with mean_match_span(base + d) = target (mean span grows with d)."""
    return solve_increasing(lambda d: float(mean_match_span(shape_logit, base + d, cap)[0]) < target)


def later_match_spans(visits: np.ndarray, censored: np.ndarray, first: int, cap: int | None) -> list[int]:
    """The spans a request's shift is fitted on: its uncensored match visits below the cap after the first."""
    return [int(s) for i, (s, cut) in enumerate(zip(visits, censored))
            if i > first and s >= 2 and (cap is None or s < cap) and not cut]


def request_shifts(spans_per_request: Sequence[list[int]], shape_logit: np.ndarray, cap: int | None) -> np.ndarray:
    """Each request's shift, by mean-span matching against its spans plus PRIOR_SPAN_VISITS at the requests' mean
    (a request without any such span gets the shift of the mean)."""
    means = [float(np.mean(s)) for s in spans_per_request if s]
    pooled = float(np.mean(means)) if means else 2.0
    top = (cap - 1) if cap else MAX_SPAN_UNCAPPED
    out = []
    for spans in spans_per_request:
        target = (sum(spans) + PRIOR_SPAN_VISITS * pooled) / (len(spans) + PRIOR_SPAN_VISITS)
        out.append(_solve_shift(min(max(target, 2.0 + 1e-6), top - 1e-6), shape_logit, cap))
    return np.array(out)


def first_shift_offset(first_spans: Sequence[int], shifts: Sequence[float], shape_logit: np.ndarray,
                       cap: int | None) -> float:
    """Offset d on the shift of a request's first match below the cap so the fitted requests' mean first-run
    span equals the data's (0 without first matches below the cap)."""
    if not first_spans:
        return 0.0
    target = float(np.mean(first_spans))
    shifts = np.asarray(shifts, dtype=float)
    return solve_increasing(lambda d: float(np.mean(mean_match_span(shape_logit, shifts + d, cap))) < target)


__all__ = ["first_shift_offset", "later_match_spans", "mean_match_span", "request_shifts", "solve_increasing"]

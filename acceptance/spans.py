"""Arithmetic on span sequences, shared by the replay, the fitter and the simulator's measured acceptance.

`spans[i]` is how many tokens the decode step whose last input token is output token i would emit
with an unlimited proposal (acceptance/records.py). `replay_steps` is the replay rule written out;
`fresh_visits` finds the run starts an unlimited-proposal replay visits, `measurement_cap` the
measurement's longest proposal where spans pile up, and `per_request_alpha` a request's per-token
rate from its fresh spans. Pure numpy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def replay_steps(spans: Sequence[int], k: int, output_tokens: int | None = None) -> list[int]:
    """Tokens emitted by each decode step of a fixed proposal length k (the hand replay; prefill excluded).

    The prefill emits token 0; while tokens are left, the step whose last input token is output
    token i = generated - 1 emits min(spans[i], k + 1, tokens left)."""
    n = len(spans) if output_tokens is None else int(output_tokens)
    generated, steps = 1, []
    while generated < n:
        e = min(int(spans[generated - 1]), k + 1, n - generated)
        steps.append(e)
        generated += e
    return steps


def measurement_cap(spans: Sequence[np.ndarray]) -> int | None:
    """The longest proposal of the measurement, if the spans pile up there: the largest span value
    when it is more frequent than the value below it (n-gram data here: 21, from 20 drafts), else None."""
    top = max(int(np.max(s)) for s in spans if len(s))
    if top < 3:
        return None
    counts = [sum(int(np.sum(s == v)) for s in spans) for v in (top, top - 1)]
    return top if counts[0] > counts[1] else None


def fresh_visits(spans: np.ndarray, cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Spans at the run starts an unlimited-proposal replay visits, and which of them are censored.

    The replay visits i = 0, then i + spans[i]. A span equal to the measurement's cap was cut by
    the measurement, not by a rejection: it is censored, and the visit it leads to lies inside the
    same run (its continuation is what `_continuation_hist` measures), so it is skipped. The last
    run start is censored when it reaches the end of the output."""
    n = len(spans)
    starts, censored, i, inside = [], [], 0, False
    while i < n - 1:
        s = int(spans[i])
        capped = cap is not None and s >= cap
        if not inside:
            starts.append(s)
            censored.append(capped or s >= n - 1 - i)
        inside = capped
        i += s
    return np.array(starts, dtype=np.int64), np.array(censored, dtype=bool)


def per_request_alpha(visits: np.ndarray) -> float:
    """Geometric MLE of a request's per-token rate from its fresh spans: 1 - 1/mean."""
    return 1.0 - 1.0 / float(np.mean(visits)) if len(visits) else 0.0


__all__ = ["replay_steps", "measurement_cap", "fresh_visits", "per_request_alpha"]

"""Copies to the end of the output: the long runs of prompt lookup that copy the rest of the answer.

A code-editing answer makes its edits and then copies the rest of the file from the prompt: in
the SpecDecode-Bench InstructCoder n-gram spans, 26 % of the long (capped) runs outside the
8,192-token loops end at most END_TAIL tokens before the output does (nearly all of them one token
before: the final token is not in the prompt). Such a copy is most common where little output is
left (87 % of the long runs starting under 32 tokens from the end, 55 % at 32-63, 21 % at 64-127,
3 % at 128-255, none beyond) and in short answers (later long runs: 87 % in the 76-107-token
stratum, 14 % in the 279-1,741-token one). Drawn from one length law instead, such a run overran a
short output or stopped short of its end. So the profile keeps `end_copy` (pooled) and, per
output-length stratum, `strata[i].end_copy`: the share of a request's first long runs, and of its
later ones, that copy to the end, for runs starting under ROOM_BOUNDS[0] tokens before the end and
for the others (a run starting that near the end may simply reach it: in ShareGPT and CNN only
those do), each shrunk toward the pooled share by PRIOR_END_RUNS pseudo-runs, and the law of how
many tokens follow a copy (0..END_TAIL). The other long runs keep the random-effects length law,
fitted on them alone, and the sampler draws them to end before the output does, as the data's do.
A dealt member of a small stratum (a repetition loop) copies as its own long runs did
(`member_end_copy`: its first long run, the share of its later ones).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

END_TAIL = 2  # a long run followed by at most this many tokens of the output is a copy to the end
ROOM_BOUNDS = (32,)  # output tokens left where a long run starts: a run starting this near the end may just reach it
PRIOR_END_RUNS = 2.0


def long_runs(spans: np.ndarray, cap: int | None) -> list[tuple[int, int, int]]:
    """Per long run (a fresh run start at the cap), as an unlimited-proposal replay emits it: (output tokens left
    where it starts, output tokens left after it, its length). A visit a capped span leads to is inside the same
    run, and its span, capped or not, continues it (acceptance.spans.fresh_visits reads runs the same way). Reading
    the length off the stretch of capped spans plus the span after it instead stops at the first re-lookup that
    finds a shorter n-gram match (InstructCoder n-gram: mean long run 52 tokens this way, 42 that way)."""
    if cap is None:
        return []
    out, n, i, inside, start, length = [], len(spans), 0, False, 0, 0
    while i < n - 1:
        s = int(spans[i])
        capped = s >= cap
        step = min(s, n - 1 - i)
        if inside:
            length += step
        elif capped:
            start, length = i, step
        if inside and not capped:
            out.append((n - 1 - start, max(0, n - 1 - (i + step)), length))
        inside = capped
        i += s
    if inside:
        out.append((n - 1 - start, 0, length))
    return out


def is_end_copy(tail: int) -> bool:
    return tail <= END_TAIL


def room_bin(room: int, bounds: Sequence[int] = ROOM_BOUNDS) -> int:
    return sum(room >= b for b in bounds)


def _shares(runs: Sequence[tuple[bool, int, int]], later: bool, pooled: Sequence[float] | None) -> list[float]:
    """Per room bin, the share of (first or later) long runs that copy to the end, shrunk toward `pooled`
    (per bin; None: toward this set's own overall share)."""
    mine = [(room, tail) for is_later, room, tail in runs if is_later == later]
    copies = np.array([is_end_copy(tail) for _, tail in mine], dtype=float)
    bins = np.array([room_bin(room) for room, _ in mine], dtype=int)
    overall = float(copies.mean()) if len(copies) else 0.0
    return [round((float(copies[bins == b].sum()) + PRIOR_END_RUNS * (overall if pooled is None else pooled[b]))
                  / (int(np.sum(bins == b)) + PRIOR_END_RUNS), 6) for b in range(len(ROOM_BOUNDS) + 1)]


def _flat(runs_per_request: Sequence[Sequence[tuple[int, int, int]]]) -> list[tuple[bool, int, int]]:
    return [(j > 0, room, tail) for request in runs_per_request for j, (room, tail, _) in enumerate(request)]


def fit_end_copy(runs_per_request: Sequence[Sequence[tuple[int, int, int]]]) -> dict:
    """{"room_bounds", "first", "later", "tail"} pooled over every request's long runs ({} when there are none):
    per room bin, the share of a request's first long runs, and of its later ones, that copy to the end."""
    runs = _flat(runs_per_request)
    if not runs:
        return {}
    tails = np.bincount([tail for _, _, tail in runs if is_end_copy(tail)], minlength=END_TAIL + 1).astype(float)
    return {"room_bounds": list(ROOM_BOUNDS), "first": _shares(runs, False, None), "later": _shares(runs, True, None),
            "tail": ({str(t): round(float(c / tails.sum()), 6) for t, c in enumerate(tails)} if tails.sum()
                     else {str(END_TAIL // 2): 1.0})}


def stratum_end_copy(runs_per_request: Sequence[Sequence[tuple[int, int, int]]], pooled: dict) -> dict:
    """{"first", "later"} of one output-length stratum, per room bin, shrunk toward the pooled shares."""
    runs = _flat(runs_per_request)
    return {"first": _shares(runs, False, pooled["first"]), "later": _shares(runs, True, pooled["later"])}


def member_end_copy(runs: Sequence[tuple[int, int, int]]) -> list[float]:
    """[first, later] of one request, unshrunk: whether its first long run copies to the end, and the share of
    its later ones that do."""
    later = [is_end_copy(tail) for _, tail, _ in runs[1:]]
    return [float(bool(runs) and is_end_copy(runs[0][1])), round(float(np.mean(later)), 6) if later else 0.0]


__all__ = ["END_TAIL", "ROOM_BOUNDS", "fit_end_copy", "is_end_copy", "long_runs", "member_end_copy", "room_bin",
           "stratum_end_copy"]

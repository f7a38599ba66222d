"""Acceptance from data: each request replays an acceptance-trace record, or follows a process sampled from a profile.

`--acceptance-trace FILE [--spans-field NAME]`: a request replays the record its `acceptance_id`
names (a request-trace column; several requests may replay one record), else records are dealt
to requests by a seeded draw (shuffled rounds, so every record is used as evenly as the request
count allows). A request longer than its record continues from the record's start (spans wrap).
`--acceptance-profile NAME|PATH`: each request gets its own `RunProcess` from the profile's
seeded sampler, drawn in the stratum of its output length (acceptance/sampler.py). An
acceptance trace given as the request trace itself (`--trace spans.jsonl.gz`, lengths from its
records, simulator/traffic.py) replays itself unless another acceptance option is given.

The drawing itself (a step using spans[i] with proposal k accepts min(spans[i] - 1, k)) lives
in `AcceptanceDrawer` (acceptance/draws.py); this module only decides who gets what. Each
request's `alpha` is the per-token rate 1 - 1 / mean fresh span (the fit's definition), which
only the oracle policy reads.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from specdec_sim.acceptance.records import (AcceptanceRecord, AcceptanceTraceError, is_acceptance_trace,
                                            load_acceptance_trace)
from specdec_sim.acceptance.spans import fresh_visits, measurement_cap, per_request_alpha

if TYPE_CHECKING:  # the profile model is imported only by runs that use one
    from specdec_sim.acceptance.sampler import ProfileSampler, RunProcess

ASSIGN_STREAM = 0xACCE  # seed stream of the record draw (independent of the per-request alpha draws)
PROFILE_STREAM = 0xB0F1


@dataclass(frozen=True)
class ReplaySpans:
    """One record prepared for replay: its spans as a list (fast indexing) and its per-token rate."""

    record_id: str
    spans: list
    alpha: float


@functools.lru_cache(maxsize=8)
def _cached_trace(path: str, spans_field: str, mtime_ns: int, size: int) -> tuple[ReplaySpans, ...]:
    records = load_acceptance_trace(path, spans_field)
    cap = measurement_cap([r.spans for r in records])
    return tuple(_prepared(r, cap) for r in records)


def _prepared(record: AcceptanceRecord, cap: int | None) -> ReplaySpans:
    visits, _ = fresh_visits(record.spans, cap)
    return ReplaySpans(record.id, record.spans.tolist(), min(per_request_alpha(visits), 0.999999))


def load_replay(path: str, spans_field: str = "spans") -> tuple[ReplaySpans, ...]:
    """The records of an acceptance trace, prepared for replay (cached per file version)."""
    try:
        stat = os.stat(path)
    except OSError:
        raise AcceptanceTraceError(f"--acceptance-trace {path}: no such file") from None
    return _cached_trace(str(path), spans_field, stat.st_mtime_ns, stat.st_size)


class MeasuredAcceptance:
    """Assigns each arriving request its measured acceptance (replayed spans or a sampled process)."""

    def __init__(self, replay: tuple[ReplaySpans, ...] | None = None, sampler: ProfileSampler | None = None,
                 acceptance_ids=None, seed: int = 0, source: str = ""):
        self.replay = replay
        self.sampler = sampler
        self.source = source
        self._order: list[int] = []
        self._rng = np.random.default_rng([seed, ASSIGN_STREAM])
        self._by_id = {r.record_id: i for i, r in enumerate(replay)} if replay else {}
        self.fixed = self._fixed_assignment(acceptance_ids) if acceptance_ids is not None and replay else None

    def _fixed_assignment(self, acceptance_ids) -> list[int]:
        out = []
        for row, name in enumerate(acceptance_ids):
            key = str(name)
            if key not in self._by_id:
                raise AcceptanceTraceError(f"request trace row {row + 1}: acceptance_id {key!r} is not a record "
                                           f"of {self.source}")
            out.append(self._by_id[key])
        return out

    def _drawn(self, index: int) -> int:
        while len(self._order) <= index:  # shuffled rounds over all records
            self._order.extend(self._rng.permutation(len(self.replay)).tolist())
        return self._order[index]

    def assign(self, index: int, output_tokens: int) -> tuple[float, list | None, RunProcess | None]:
        """(alpha, spans to replay or None, process or None) of the request at trace row `index`."""
        if self.replay:
            rec = self.replay[self.fixed[index] if self.fixed is not None else self._drawn(index)]
            return rec.alpha, rec.spans, None
        process = self.sampler.draw(output_tokens)
        return min(process.alpha, 0.999999), None, process


def build_measured(config, trace, seed: int) -> MeasuredAcceptance | None:
    """The run's measured acceptance, or None when neither --acceptance-trace nor --acceptance-profile is given."""
    path = config.acceptance_trace
    if not path and not config.acceptance_profile and getattr(trace, "acceptance_id", None) is not None \
            and is_acceptance_trace(trace.source):
        path = trace.source  # the request trace is an acceptance trace: it replays itself
    if path:
        replay = load_replay(path, config.spans_field)
        ids = getattr(trace, "acceptance_id", None)
        return MeasuredAcceptance(replay=replay, acceptance_ids=ids, seed=seed, source=str(path))
    if config.acceptance_profile:
        from specdec_sim.acceptance.profile import load_profile
        from specdec_sim.acceptance.sampler import ProfileSampler

        profile = load_profile(config.acceptance_profile)
        return MeasuredAcceptance(sampler=ProfileSampler(profile, [seed, PROFILE_STREAM]), seed=seed,
                                  source=profile.name)
    return None


__all__ = ["MeasuredAcceptance", "ReplaySpans", "build_measured", "load_replay"]

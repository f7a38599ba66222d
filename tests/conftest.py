"""Shared test helpers: a fake decoding request and DecodeBatch builders for policy tests; trace-file helpers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest
from hypothesis import HealthCheck, settings

from specdec_sim.costmodel import CostModel
from specdec_sim.policies.base import DecodeBatch, StepOutcome


# No clock decides a test: hypothesis's per-example deadline and its too-slow health check both time live runs,
# and a machine under load fails them. Settings made in the test modules inherit this profile.
settings.register_profile("no-clock", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("no-clock")


@dataclass
class FakeRequest:
    """What a policy sees of a decoding request. Reading `alpha` (the true acceptance) raises unless
    `true_alpha` is given: only the oracle may read it, and reads are counted. There is no true
    remaining length at all: a policy knows `budget_left` (max_tokens - generated) only."""

    request_id: int
    true_alpha: float | None = None
    context_tokens: int = 512
    budget_left: int = 10_000
    ngram_match: bool = True
    alpha_reads: int = 0

    @property
    def alpha(self) -> float:
        if self.true_alpha is None:
            raise AssertionError("policy read the true alpha")
        self.alpha_reads += 1
        return self.true_alpha


def fake_batch(requests: Sequence[FakeRequest], cost: CostModel, max_k: int = 7, style: str = "draft",
               **kw) -> DecodeBatch:
    """A DecodeBatch over `requests`, each at its own context (kv_tokens is their sum)."""
    return DecodeBatch(requests=list(requests), cost=cost, kv_tokens=sum(r.context_tokens for r in requests),
                       max_k=max_k, style=style, **kw)


def fake_outcome(proposed: list[int], accepted: list[int]) -> StepOutcome:
    reqs = [FakeRequest(i) for i in range(len(proposed))]
    return StepOutcome(requests=reqs, proposed=proposed, accepted=accepted, step_time_s=0.01)


# ---- trace files ----------------------------------------------------------------------------
HEADER = "request_id,arrival_time_s,prompt_tokens,output_tokens\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    for part in parts:
        assert part in message, (part, message)
    return message


# ---- JSON documents ---------------------------------------------------------------------------
def edited_json(data: dict, path: str, value) -> dict:
    """`data` with the entry at dotted `path` set to `value` (removed when `value` is KeyError), in place."""
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is KeyError:
        node.pop(last)
    else:
        node[last] = value
    return data


# ---- cost without a clock ---------------------------------------------------------------------
def python_calls(fn, *args, **kwargs) -> tuple[object, int]:
    """`fn(*args, **kwargs)` and the number of Python-level function calls it made.

    How fast something is must not be decided by a clock in a test (the machine may be loaded); what makes
    it fast can be counted instead: a loader that is vectorized makes a few hundred Python calls whatever
    the row count, one with a per-row Python loop makes at least one per row."""
    import sys

    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event == "call":
            count += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        result = fn(*args, **kwargs)
    finally:
        sys.setprofile(previous)
    return result, count

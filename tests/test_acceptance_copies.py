"""Copies to the end of the output (acceptance/copies.py): tails by hand, the fitted shares, and the
sampler's long runs (a copy ends its drawn tail before the output; any other long run ends before it)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from specdec_sim.acceptance.records import AcceptanceRecord
from specdec_sim.acceptance.copies import END_TAIL, PRIOR_END_RUNS, ROOM_BOUNDS, long_runs, member_end_copy, room_bin
from specdec_sim.acceptance.fit import fit_profile
from specdec_sim.acceptance.profile import load_profile, save_profile
from specdec_sim.acceptance.sampler import ProfileSampler

from test_acceptance_profile import synthetic_spans

CAP = 8


def copy_block(length: int) -> list[int]:
    """Spans of one correct run of `length` tokens as a capped measurement sees them: min(left, CAP)."""
    return [min(length - j, CAP) for j in range(length)]


def test_long_run_tails_by_hand():
    # a run of 12 at position 3 (span 8, then the visit at 11 continues it with 4, to position 15), then the
    # output's tokens 16, 17, 18
    spans = np.array([1, 1, 1] + copy_block(12) + [2, 1, 1, 1])
    assert long_runs(spans, CAP) == [(15, 3, 12)]  # 15 output tokens left where it starts, 3 after it, 12 long
    # the same run followed by a single token: a copy to the end
    assert long_runs(np.array([1, 1, 1] + copy_block(12) + [1, 1]), CAP) == [(13, 1, 12)]
    assert long_runs(spans, None) == []
    assert member_end_copy([(50, 1, 40), (40, 9, 30), (9, 0, 9)]) == [1.0, 0.5] and member_end_copy([]) == [0.0, 0.0]
    assert [room_bin(r) for r in (0, 31, 32, 10 ** 6)] == [0, 0, 1, 1] and ROOM_BOUNDS == (32,)


def records_ending_in_a_copy(count: int, seed: int = 0) -> list[AcceptanceRecord]:
    """Answers that make edits (short runs, rate 0.5) and then copy the rest but their last token."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        head, copy = int(rng.integers(40, 80)), int(rng.integers(20, 60))
        spans = synthetic_spans(head, 0.5, 0.6, 0.5, rng, cap=CAP) + copy_block(copy) + [1, 1]
        out.append(AcceptanceRecord(str(i), 30, len(spans), spans))
    return out


def sampled_long_runs(profile, lengths, seed: int = 3) -> list[tuple[int, int]]:
    """(output tokens left where each long run starts, left after it) over one unlimited-proposal pass per length."""
    sampler, rng, runs = ProfileSampler(profile, seed), random.Random(seed), []
    for n in lengths:
        process, generated, room = sampler.draw(n), 1, None
        while generated < n:
            before = process.run_left
            span = process.current_span(rng)
            if before == 0 and process.run_left > 0:
                room = n - generated
            emitted = min(span, n - generated)
            process.advance(emitted)
            generated += emitted
            if room is not None and process.run_left == 0:
                runs.append((room, n - generated))
                room = None
    return runs


def test_a_profile_of_answers_that_copy_to_the_end_copies_to_the_end():
    records = records_ending_in_a_copy(120)
    profile = fit_profile(records, "copies", "ngram")
    assert profile.measurement_cap == CAP
    # one token follows each copy; when the copy is a multiple of the cap long, the visit after its last capped
    # span is the final token's and counts to the run (the module's convention), so 1 in 8 reads as 0
    tail = profile.end_copy["tail"]
    assert tail["1"] > 0.8 and tail["0"] < 0.2 and tail["2"] == 0.0
    assert min(profile.end_copy["first"][:2]) > 0.6  # the copies start with 20-60 tokens left
    # per room bin, the fitted shares (first long runs, later ones) are the measured ones, shrunk toward the pooled
    # share by PRIOR_END_RUNS
    measured = [(j > 0, room, tail) for r in records
                for j, (room, tail, _) in enumerate(long_runs(np.array(r.spans), CAP))]
    for name, later in (("first", False), ("later", True)):
        mine = [(room, tail) for is_later, room, tail in measured if is_later == later]
        pooled = np.mean([tail <= END_TAIL for _, tail in mine]) if mine else 0.0
        for b, share in enumerate(profile.end_copy[name]):
            here = [tail <= END_TAIL for room, tail in mine if room_bin(room) == b]
            assert share == pytest.approx((sum(here) + PRIOR_END_RUNS * pooled) / (len(here) + PRIOR_END_RUNS),
                                          abs=1e-5)
    # and the sampler's long runs copy to the end at about those shares
    runs = sampled_long_runs(profile, [r.output_tokens for r in records] * 3)
    first = profile.end_copy["first"]
    for b in range(len(first)):
        here = [left <= END_TAIL for room, left in runs if room_bin(room) == b]
        if len(here) >= 40:
            assert np.mean(here) == pytest.approx(first[b], abs=0.15)


def test_long_runs_reach_the_end_as_often_as_measured():
    """Ordinary runs (no copying): only those that start near the end reach it, as often in the sampler as in the
    data (a length law drawn without the output's end in view cut InstructCoder's 83-122-token answers' long runs
    to 37 tokens against 44 measured)."""
    rng = np.random.default_rng(5)
    records = [AcceptanceRecord(str(i), 30, 300, synthetic_spans(300, 0.5, 0.7, 0.85, rng, cap=CAP)) for i in range(60)]
    profile = fit_profile(records, "ordinary", "ngram")
    share = profile.end_copy["later"]
    assert share[-1] < 0.05 and share[0] > share[-1]  # the share falls with the output left
    measured = [run[:2] for r in records for run in long_runs(np.array(r.spans), CAP)]
    runs = sampled_long_runs(profile, [300] * 120)
    assert len(runs) > 100
    assert np.mean([left <= 2 for _, left in runs]) == pytest.approx(np.mean([t <= 2 for _, t in measured]), abs=0.05)


def test_a_profile_without_copies_still_loads_and_never_copies(tmp_path):
    profile = fit_profile(records_ending_in_a_copy(60, seed=2), "copies", "ngram")
    profile.end_copy = {}
    for stratum in profile.strata:
        stratum.pop("member_end_copy", None)
        stratum.pop("end_copy", None)
    loaded = load_profile(save_profile(profile, tmp_path / "old.json"))
    assert loaded.end_copy == {}
    sampler = ProfileSampler(loaded, 0)
    assert sampler.end_tail_cdf == () and sampler.draw(120).end_tail_cdf == ()


@pytest.mark.parametrize("bad", [{"tail": {"0": 0.5}}, {"tail": {"x": 1.0}}, {"first": [0.5]}, {"later": [2.0] * 6}])
def test_a_bad_end_copy_is_refused_in_one_line(tmp_path, bad):
    profile = fit_profile(records_ending_in_a_copy(30, seed=4), "copies", "ngram")
    profile.end_copy = {**profile.end_copy, **bad}
    path = save_profile(profile, tmp_path / "bad.json")
    with pytest.raises(ValueError, match="end_copy"):
        load_profile(path)


def test_end_tail_bound_is_small():
    assert 0 <= END_TAIL <= 4  # "a copy to the end" means the copy leaves at most a closing token or two

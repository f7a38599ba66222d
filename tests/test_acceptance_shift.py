"""A request's position-rate shift by mean-span matching, and the lead hazard per output-length stratum
(acceptance/shift.py, acceptance/fit.py): closed forms, the fitted means, the sampler's leads."""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specdec_sim.acceptance.records import AcceptanceRecord
from specdec_sim.acceptance.fit import fit_profile, fit_requests
from specdec_sim.acceptance.profile import MAX_POSITION, PRIOR_SPAN_VISITS, _logit
from specdec_sim.acceptance.sampler import ProfileSampler
from specdec_sim.acceptance.shift import first_shift_offset, later_match_spans, mean_match_span, request_shifts

from test_acceptance_profile import synthetic_spans


@pytest.mark.parametrize("rate", [0.3, 0.7, 0.95])
@pytest.mark.parametrize("cap", [None, 8, 21])
def test_mean_span_is_the_closed_form_of_a_constant_rate(rate: float, cap):
    """P(span >= m) = rate^(m - 2) for m >= 2, the span stopping at cap - 1: E = 1 + sum_{j=0}^{top-2} rate^j."""
    shape = np.full(MAX_POSITION, float(_logit(rate)))
    top = (cap - 1) if cap else 256
    assert mean_match_span(shape, 0.0, cap)[0] == pytest.approx(1 + sum(rate ** j for j in range(top - 1)), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(2, 20), max_size=6), min_size=1, max_size=8))
def test_each_shift_reproduces_its_requests_shrunk_mean_span(spans_per_request):
    shape = _logit(np.linspace(0.8, 0.5, MAX_POSITION))
    shifts = request_shifts(spans_per_request, shape, cap=21)
    means = [np.mean(s) for s in spans_per_request if s]
    pooled = float(np.mean(means)) if means else 2.0
    for spans, shift in zip(spans_per_request, shifts):
        target = (sum(spans) + PRIOR_SPAN_VISITS * pooled) / (len(spans) + PRIOR_SPAN_VISITS)
        target = min(max(target, 2.0), 20.0)
        assert mean_match_span(shape, shift, 21)[0] == pytest.approx(target, abs=1e-3)  # at 2 or 20: the bound


def test_longer_runs_mean_a_larger_shift_and_the_first_match_offset_closes_the_gap():
    shape = _logit(np.full(MAX_POSITION, 0.6))
    short, long = request_shifts([[2, 3, 2, 3], [9, 12, 10, 11]], shape, cap=None)
    assert long > short
    offset = first_shift_offset([12, 14], [short, short], shape, cap=None)
    assert float(np.mean(mean_match_span(shape, np.array([short, short]) + offset, None))) == pytest.approx(13.0)
    assert first_shift_offset([], [short], shape, cap=None) == 0.0


def test_later_match_spans_leave_out_the_first_the_censored_and_the_capped():
    visits = np.array([1, 5, 1, 3, 21, 4, 7])
    censored = np.array([False, False, False, False, True, False, True])
    assert later_match_spans(visits, censored, first=1, cap=21) == [3, 4]


def test_fitted_runs_are_as_long_as_each_requests_own():
    """A request whose run lengths are not the pooled shape's (here: every run exactly 9 tokens, among geometric
    ones) still gets runs of its own mean length: what its serving cost depends on."""
    rng = np.random.default_rng(4)
    geometric = [AcceptanceRecord(str(i), 20, 400, synthetic_spans(400, 0.6, 0.8, 0.6, rng)) for i in range(40)]
    fixed = [AcceptanceRecord(f"f{i}", 20, 400, ([1] + list(range(9, 0, -1))) * 40) for i in range(10)]
    records = geometric + fixed
    fit = fit_requests(records)
    shape = _logit(fit.position_shape)
    own = float(np.mean(mean_match_span(shape, fit.table[-10:, 2], fit.cap)))
    assert own == pytest.approx(9.0, rel=0.03)


def test_the_lead_is_fitted_per_length_stratum_and_the_sampler_uses_its_own():
    # short outputs open with 2 span-1 positions before their first match, long ones with 12
    rng = np.random.default_rng(7)
    short = [AcceptanceRecord(f"s{i}", 20, 120, [1, 1] + list(range(6, 0, -1)) + synthetic_spans(112, 0.6, 0.8, 0.6, rng))
             for i in range(30)]
    long = [AcceptanceRecord(f"l{i}", 20, 900, [1] * 12 + list(range(6, 0, -1)) + synthetic_spans(882, 0.6, 0.8, 0.6, rng))
            for i in range(30)]
    profile = fit_profile(short + long, "leads")
    hazards = [s["lead_hazard"] for s in profile.strata]
    assert hazards[0][:3] == [0.0, 0.0, 1.0] and hazards[-1][:12] == [0.0] * 12 and hazards[-1][12] == 1.0
    sampler, rng_spans = ProfileSampler(profile, 1), random.Random(1)
    for length, lead in ((120, 2), (900, 12)):
        proc = sampler.draw(length)
        spans = []
        while len(spans) <= lead:
            spans.append(proc.current_span(rng_spans))
            proc.advance(spans[-1])
        assert spans[:lead] == [1] * lead and spans[lead] >= 2

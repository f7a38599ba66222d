"""Acceptance profiles: a fit on synthetic spans recovers the parameters that made them; sampling reproduces the
replay; one outlier request does not move per-request statistics; files, shipped presets, `fit-acceptance`."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from specdec_sim.acceptance.records import AcceptanceRecord, write_acceptance_trace
from specdec_sim.acceptance.spans import replay_steps
from specdec_sim.acceptance.cli import main as fit_cli
from specdec_sim.acceptance.copies import long_runs
from specdec_sim.acceptance.fit import _excess_locations, fit_profile
from specdec_sim.acceptance.spans import fresh_visits, measurement_cap
from specdec_sim.acceptance.profile import (MAX_POSITION, ProfileError, available_profiles, load_profile, log_excess,
                                            save_profile)
from specdec_sim.acceptance.sampler import ProfileSampler


def synthetic_spans(n: int, p01: float, p11: float, rate: float, rng: np.random.Generator,
                    cap: int | None = None) -> list[int]:
    """Spans of runs tiling the output: match by a 2-state chain, geometric run length given a match, and inside a
    run the spans fall by one (S, S-1, ..., 1), as a draft that keeps agreeing with itself gives."""
    spans, last = [], None
    while len(spans) < n:
        p = p01 if not last else p11
        last = rng.random() < p
        s = 1
        if last:
            s = 2
            while rng.random() < rate:
                s += 1
        spans.extend(range(s, 0, -1))
    spans = spans[:n]
    if cap is not None:
        spans = [min(x, cap) for x in spans]
    return [min(x, n - i) for i, x in enumerate(spans)]  # a span never passes the end of the output


def synthetic_records(count: int, n: int, p01=0.6, p11=0.8, rate=0.7, seed=0, cap=None) -> list[AcceptanceRecord]:
    rng = np.random.default_rng(seed)
    return [AcceptanceRecord(str(i), 20, n, synthetic_spans(n, p01, p11, rate, rng, cap)) for i in range(count)]


def test_fit_recovers_the_generating_parameters():
    profile = fit_profile(synthetic_records(60, 600), "synthetic")
    trans = profile.summary["pooled_match_transitions"]
    assert trans["p01"] == pytest.approx(0.6, abs=0.03)
    assert trans["p11"] == pytest.approx(0.8, abs=0.03)
    assert np.allclose(profile.position_shape[:4], 0.7, atol=0.03)  # geometric: the same rate at every position
    # inside runs the spans fall by one: the continuation law is X = 0
    assert profile.continuation["3-6/d2"]["0"] > 0.99 and profile.continuation["7+/d4"]["0"] > 0.99
    assert profile.continuation["1/d4"]["0"] > 0.99 and profile.continuation["2/d4"]["0"] > 0.99  # r = 1, 2 apart
    assert profile.measurement_cap is None and len(profile.strata) == 3


def sampled_acceptance_length(profile, records, k: int, seed: int = 1) -> float:
    sampler, rng = ProfileSampler(profile, seed), random.Random(seed)
    tokens = steps = 0
    for rec in records:
        proc, generated = sampler.draw(rec.output_tokens), 1
        while generated < rec.output_tokens:
            e = min(proc.current_span(rng), k + 1, rec.output_tokens - generated)
            proc.advance(e)
            generated, tokens, steps = generated + e, tokens + e, steps + 1
    return tokens / steps


@pytest.mark.parametrize("k", [1, 3, 7])
def test_sampled_requests_reproduce_the_replayed_acceptance_length(k: int):
    records = synthetic_records(40, 2000, seed=3)
    profile = fit_profile(records, "synthetic")
    replay = [replay_steps(r.spans, k) for r in records]
    exact = sum(map(sum, replay)) / sum(map(len, replay))
    assert sampled_acceptance_length(profile, records, k) == pytest.approx(exact, rel=0.02)


def test_measurement_cap_is_found_and_censors_runs():
    records = synthetic_records(40, 600, rate=0.93, cap=8, seed=5)
    assert measurement_cap([r.spans for r in records]) == 8
    profile = fit_profile(records, "capped")
    assert profile.measurement_cap == 8 and len(profile.excess_residual) == len(profile.levels)
    # a run of 30 tokens seen through a cap of 8: spans 8 x 23, then 7, 6, ..., 1: one long run of excess 22
    run = np.array([8] * 23 + list(range(7, 0, -1)) + [1, 1])
    assert [log_excess(length, 8) for _, _, length in long_runs(run, 8)] == [pytest.approx(np.log1p(22))]
    # the capped span at 0 leads to position 8, inside the same run: skipped; the last start reaches the end
    visits, censored = fresh_visits(np.array([8, 7, 6, 5, 4, 3, 2, 1, 3, 2, 1, 2, 1, 1, 1, 1]), cap=8)
    assert visits.tolist() == [8, 2, 1, 1] and censored.tolist() == [True, False, False, True]
    exact = [replay_steps(r.spans, 3) for r in records]
    assert sampled_acceptance_length(profile, records, 3) == pytest.approx(
        sum(map(sum, exact)) / sum(map(len, exact)), rel=0.03)


def test_one_long_outlier_moves_pooled_tokens_not_per_request_statistics():
    base = synthetic_records(50, 200, p01=0.3, p11=0.3, rate=0.5, seed=7)
    loop = AcceptanceRecord("loop", 20, 8192, [min(20, 8192 - i) for i in range(8192)])  # a repetition loop
    plain, with_loop = fit_profile(base, "a"), fit_profile(base + [loop], "b")
    median = plain.summary["per_request_alpha_quantiles"]["p50"]
    assert with_loop.summary["per_request_alpha_quantiles"]["p50"] == pytest.approx(median, abs=0.02)
    pooled = lambda recs: sum(sum(replay_steps(r.spans, 3)) for r in recs) / sum(len(replay_steps(r.spans, 3))
                                                                                 for r in recs)
    assert pooled(base + [loop]) > pooled(base) + 0.5  # token-pooled acceptance is dominated by the one loop
    assert with_loop.strata[0]["quantiles"]["shift"] == pytest.approx(plain.strata[0]["quantiles"]["shift"], abs=0.3)


def test_strata_follow_output_length():
    short = synthetic_records(30, 100, rate=0.3, seed=1)
    long = [AcceptanceRecord(f"L{i}", 20, 1200, r.spans) for i, r in
            enumerate(synthetic_records(30, 1200, rate=0.85, seed=2))]
    profile = fit_profile(short + long, "mixed")
    sampler = ProfileSampler(profile, 0)
    assert sampler.stratum(100) < sampler.stratum(1200)
    lo = np.mean([sampler.draw(100).rates[2] for _ in range(50)])
    hi = np.mean([sampler.draw(1200).rates[2] for _ in range(50)])
    assert hi > lo + 0.2
    a, b = ProfileSampler(profile, 4), ProfileSampler(profile, 4)
    assert [a.draw(300).p01 for _ in range(5)] == [b.draw(300).p01 for _ in range(5)]  # seeded


def test_save_load_round_trip_and_bad_files(tmp_path: Path):
    profile = fit_profile(synthetic_records(25, 200), "mine", "eagle", "test")
    path = save_profile(profile, tmp_path / "mine.json")
    assert load_profile(path) == profile
    data = json.loads(path.read_text())
    data["position_shape"] = data["position_shape"][:3]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=f"position_shape must hold {MAX_POSITION}"):
        load_profile(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("[1, 2")
    with pytest.raises(ProfileError, match="not an acceptance profile"):
        load_profile(tmp_path / "junk.json")
    with pytest.raises(ProfileError, match="neither a file nor a shipped profile.*sharegpt-eagle"):
        load_profile("no-such-profile")


def test_shipped_presets_carry_attribution_and_no_sequences():
    names = available_profiles()
    for dataset in ("gsm8k", "cnn", "sharegpt", "instructcoder"):
        for proposer in ("eagle", "ngram"):
            assert f"{dataset}-{proposer}" in names
    profile = load_profile("sharegpt-ngram")
    assert "2601.11580" in profile.source["paper"] and "no license" in profile.source["license"]
    assert profile.summary["requests"] == 310 and profile.summary["output_tokens_max"] == 8192
    text = json.dumps(json.loads((Path(__file__).parents[1] / "acceptance" / "profiles" /
                                  "sharegpt-ngram.json").read_text()))
    assert '"spans"' not in text and '"id"' not in text


def test_fit_acceptance_cli_end_to_end(tmp_path: Path, capsys):
    trace = write_acceptance_trace(tmp_path / "t.jsonl.gz", synthetic_records(25, 150))
    out = tmp_path / "p.json"
    assert fit_cli([str(trace), "--out", str(out), "--proposer", "eagle"]) == 0
    printed = capsys.readouterr().out
    assert "25 requests" in printed and "k=3" in printed and "wrote" in printed
    assert load_profile(out).name == "p"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt_tokens": 2, "output_tokens": 2, "spans": [1]}\n')
    assert fit_cli([str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 1" in err and "'spans'" in err
    assert fit_cli([str(trace), "--out", str(out), "--spans-field", "eagle_spans"]) == 2
    assert "missing field 'eagle_spans'" in capsys.readouterr().err


def test_lead_and_first_match_have_their_own_laws():
    # prompt lookup cannot match before its n-gram exists: every request opens with six span-1 positions, then a
    # 12-token copy, then the plain chain (runs of geometric length, rate 0.7: mean span 4.3)
    base = synthetic_records(40, 400, seed=11)
    records = [AcceptanceRecord(r.id, 20, 418, [1] * 6 + list(range(12, 0, -1)) + list(r.spans)) for r in base]
    profile = fit_profile(records, "lead")
    assert profile.lead_hazard[:6] == [0.0] * 6 and profile.lead_hazard[6] == 1.0
    assert profile.first_match_offsets["shift"] > 1.0  # the first run reaches further than the later ones
    sampler, rng = ProfileSampler(profile, 2), random.Random(2)
    for _ in range(5):
        proc = sampler.draw(418)
        spans = []
        for _ in range(7):
            spans.append(proc.current_span(rng))
            proc.advance(spans[-1])
        assert spans[:6] == [1] * 6 and spans[6] >= 2


def test_long_run_excess_is_a_random_effects_fit():
    # no spread within requests: each request keeps its own location, nothing is left to scatter
    locations, residual = _excess_locations([[1.0, 1.0], [3.0, 3.0], []])
    assert locations[:2] == [pytest.approx(1.0), pytest.approx(3.0)] and locations[2] == pytest.approx(2.0)
    assert np.allclose(residual, 0.0)
    # no spread between requests: every location is the common mean, the scatter is the within spread
    locations, residual = _excess_locations([[0.0, 2.0]] * 3)
    assert locations == [pytest.approx(1.0)] * 3
    assert residual[0] == pytest.approx(-np.sqrt(2)) and residual[-1] == pytest.approx(np.sqrt(2))


def test_small_stratum_members_are_dealt_evenly():
    short = synthetic_records(30, 200, seed=12)
    loops = [AcceptanceRecord(f"loop{i}", 20, 1000, synthetic_spans(1000, 0.6, 0.8, rate, np.random.default_rng(i)))
             for i, rate in enumerate((0.2, 0.4, 0.6, 0.8))]
    profile = fit_profile(short + loops, "loops")
    assert len(profile.strata[-1]["members"]) == 4
    sampler = ProfileSampler(profile, 5)
    drawn = [sampler.draw(1000).p01 for _ in range(8)]
    assert len(set(drawn[:4])) == 4 and set(drawn[:4]) == set(drawn[4:])  # each member once per round


def test_profile_with_one_law_for_one_and_two_tokens_left_still_loads(tmp_path: Path):
    data = json.loads(json.dumps(__import__("dataclasses").asdict(fit_profile(synthetic_records(25, 200), "old"))))
    for d in range(1, 9):  # the earlier format: r = 1 and r = 2 shared "1-2/d<e>"
        data["continuation"][f"1-2/d{d}"] = data["continuation"].pop(f"1/d{d}")
        del data["continuation"][f"2/d{d}"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    profile = load_profile(tmp_path / "old.json")
    assert profile.continuation["2/d3"] == profile.continuation["1-2/d3"] == profile.continuation["1/d3"]
    assert ProfileSampler(profile, 0).draw(200).p01 > 0

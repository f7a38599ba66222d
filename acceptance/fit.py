"""Fitting an acceptance profile (acceptance/profile.py describes the model) from acceptance records.

Pure numpy. Per request: the run starts of an unlimited-proposal replay (`fresh_visits`), their
match chain, the position counts of their spans, the lengths of runs past the measurement cap;
pooled (requests weighing alike): the position shape, the continuation laws, the lead hazard (per
length stratum too) and the first match's offsets (acceptance/lead.py); each request's
position-rate shift by mean-span matching (acceptance/shift.py); the long-run excess by a
random-effects fit, and the copies to the end of the output (acceptance/copies.py).
`fit_profile` turns them into the stored quantiles, strata and correlations; `fit_summary` into
the numbers a reader checks a fit by.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

import numpy as np

from specdec_sim.acceptance.profile import (CONTINUATION_BUCKETS, LEVELS, MAX_CONTINUATION, MAX_CUT, MAX_POSITION,
                                            MAX_STRATA, MIN_CAPPED, MIN_STRATUM, PARAMS, PRIOR_TRANSITIONS,
                                            AcceptanceProfile, ProfileError, _logit, bucket_name, log_excess)
from specdec_sim.acceptance.copies import fit_end_copy, is_end_copy, long_runs, member_end_copy, stratum_end_copy
from specdec_sim.acceptance.lead import first_match_index, first_offsets, lead_hazard
from specdec_sim.acceptance.shift import later_match_spans, request_shifts
from specdec_sim.acceptance.spans import fresh_visits, measurement_cap, per_request_alpha, replay_steps

_NORMAL = NormalDist()


def _shape_counts(visits: np.ndarray, censored: np.ndarray, cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Trials and successes of draft positions 1..MAX_POSITION over a request's match run starts below the cap
    (runs at the cap are the long-run regime, counted apart)."""
    trials = np.zeros(MAX_POSITION)
    wins = np.zeros(MAX_POSITION)
    for s, cut in zip(visits, censored):
        if s < 2 or (cap is not None and s >= cap):
            continue
        accepted_after_first = s - 2  # positions 1..s-2 accepted, s-1 rejected (unless censored)
        for j in range(1, s - (1 if cut else 0)):
            b = min(j, MAX_POSITION) - 1
            trials[b] += 1
            wins[b] += j <= accepted_after_first
    return trials, wins


def _continuation_hist(spans: np.ndarray, cap: int | None = None, max_d: int = MAX_CUT) -> np.ndarray:
    """Per remaining-run bucket and distance d, histogram of X = S[i+d] - (S[i] - d) over pairs inside runs (r = S[i] - d >= 1),
    X clipped to +-MAX_CONTINUATION; shape (buckets, MAX_CUT, 2 * MAX_CONTINUATION + 1). Pairs starting at a capped
    span are left out: long runs past the cap are modelled by their length (`copies.long_runs`), not by X."""
    hist = np.zeros((len(CONTINUATION_BUCKETS), max_d, 2 * MAX_CONTINUATION + 1))
    n = len(spans)
    for d in range(1, max_d + 1):
        if n <= d:
            break
        head, tail = spans[:-d], spans[d:]
        inside = (head > d) if cap is None else (head > d) & (head < cap)
        r = head[inside] - d
        x = np.clip(tail[inside] - r, -MAX_CONTINUATION, MAX_CONTINUATION) + MAX_CONTINUATION
        for b, (lo, hi) in enumerate(CONTINUATION_BUCKETS):
            sel = (r >= lo) & (r <= hi)
            hist[b, d - 1] += np.bincount(x[sel], minlength=hist.shape[2])
    return hist


def _transitions(visits: np.ndarray) -> np.ndarray:
    """Counts [[n00, n01], [n10, n11]] of match indicators over consecutive fresh visits."""
    m = (visits >= 2).astype(np.int64)
    counts = np.zeros((2, 2))
    if len(m) > 1:
        np.add.at(counts, (m[:-1], m[1:]), 1)
    return counts


def _normal_scores(values: np.ndarray) -> np.ndarray:
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return np.array([_NORMAL.inv_cdf((r + 0.5) / len(values)) for r in ranks])


def _beta_fit(values: np.ndarray) -> dict:
    """Moment-fitted Beta of the per-request rates and its KS distance to their empirical CDF."""
    mean, var = float(np.mean(values)), float(np.var(values))
    if var <= 0 or not 0 < mean < 1:
        return {"a": None, "b": None, "ks": None}
    common = mean * (1 - mean) / var - 1
    a, b = mean * common, (1 - mean) * common
    grid = np.linspace(1e-6, 1 - 1e-6, 4001)
    log_pdf = (a - 1) * np.log(grid) + (b - 1) * np.log1p(-grid) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    cdf = np.concatenate([[0.0], np.cumsum((np.exp(log_pdf[1:]) + np.exp(log_pdf[:-1])) / 2 * np.diff(grid))])
    cdf /= cdf[-1]
    xs = np.sort(values)
    model = np.interp(xs, grid, cdf)
    emp_hi = np.arange(1, len(xs) + 1) / len(xs)
    ks = float(max(np.max(np.abs(emp_hi - model)), np.max(np.abs(emp_hi - 1 / len(xs) - model))))
    return {"a": round(a, 4), "b": round(b, 4), "ks": round(ks, 4)}


@dataclass
class RequestFit:
    """Per-request parameters of a fit (kept in memory only, never saved)."""

    position_shape: np.ndarray
    continuation: np.ndarray
    table: np.ndarray  # one row per request with output > 1 token: PARAMS, then output tokens
    first_match: float
    usable: list
    cap: int | None = None
    excess_residual: np.ndarray | None = None
    lead_hazard: list | None = None
    first_offsets: dict | None = None
    firsts: list | None = None  # per request: index of its first matching fresh visit
    long_runs: list | None = None  # per request: copies.long_runs (room, tail, length) per long run


def fit_requests(records: Sequence, name: str = "profile") -> RequestFit:
    """Pooled shape and continuation, and each request's (logit p01, logit p11, shift, log output)."""
    if not records:
        raise ProfileError(f"{name}: no records to fit")
    usable = []
    cap = measurement_cap([np.asarray(rec.spans) for rec in records])
    for rec in records:
        spans = np.asarray(rec.spans, dtype=np.int64)
        visits, censored = fresh_visits(spans, cap)
        if len(visits):
            usable.append((visits, censored, spans, int(rec.output_tokens)))
    if not usable:
        raise ProfileError(f"{name}: every record has a single output token: nothing to fit")
    counts = [_shape_counts(v, c, cap) for v, c, _, _ in usable]
    rates = np.vstack([np.where(t > 0, w / np.maximum(t, 1), np.nan) for t, w in counts])
    reached = ~np.all(np.isnan(rates), axis=0)
    shape = np.full(MAX_POSITION, np.nan)
    shape[reached] = np.nanmean(rates[:, reached], axis=0)  # per-request rates averaged: requests weigh alike
    shape = _fill_shape(shape)
    shape_logit = _logit(shape)
    firsts = [first_match_index(v) for v, _, _, _ in usable]
    trans = [_transitions(v[m0:]) for (v, _, _, _), m0 in zip(usable, firsts)]  # the lead is `lead_hazard`'s
    pool01 = _request_mean([t[0, 1] / t[0].sum() for t in trans if t[0].sum()], 0.0)
    pool11 = _request_mean([t[1, 1] / t[1].sum() for t in trans if t[1].sum()], 0.5)
    first_match = _request_mean([float(v[0] >= 2) for v, _, _, _ in usable], 0.5)
    first_long = [bool(m0 < len(v) and cap is not None and v[m0] >= cap) for (v, _, _, _), m0 in zip(usable, firsts)]
    runs = [long_runs(s, cap) for _, _, s, _ in usable]
    # the length law is fitted on the long runs that are not copies to the end (acceptance/copies.py)
    excess = [[log_excess(length, cap) if not is_end_copy(tail) else None for _, tail, length in rs]
              for rs in runs]
    later_excess = [[x for x in (xs[1:] if fl else xs) if x is not None]  # the first match has its offsets
                    for xs, fl in zip(excess, first_long)]
    locations, residual = _excess_locations(later_excess)
    a = PRIOR_TRANSITIONS
    longs = [_long_counts(v[m0 + 1:], cap) for (v, _, _, _), m0 in zip(usable, firsts)]
    pool_long = _request_mean([n / m for n, m in longs if m], 0.0)
    shifts = request_shifts([later_match_spans(v, c, m0, cap) for (v, c, _, _), m0 in zip(usable, firsts)],
                            shape_logit, cap)
    rows = []
    for (visits, _, _, length), tr, loc, (n_long, n_match), shift in zip(usable, trans, locations, longs, shifts):
        p01 = (tr[0, 1] + a * pool01) / (tr[0].sum() + a)
        p11 = (tr[1, 1] + a * pool11) / (tr[1].sum() + a)
        long = (n_long + a * pool_long) / (n_match + a)
        rows.append((_logit(p01), _logit(p11), float(shift), loc, _logit(long), length))
    table = np.array(rows)
    offsets = first_offsets(usable, firsts, first_long, excess, table, shape_logit, cap)
    hists = [_continuation_hist(s, cap) for _, _, s, _ in usable]
    hist = np.array([[_bucket_mean([h[b, d] for h in hists]) for d in range(MAX_CUT)]
                     for b in range(len(CONTINUATION_BUCKETS))])
    return RequestFit(shape, hist, table, first_match, usable, cap, residual, lead_hazard(usable, firsts), offsets,
                      firsts, runs)


def _long_counts(visits: np.ndarray, cap: int | None) -> tuple[int, int]:
    """(match run starts at the cap, match run starts): the request's long-run share."""
    matches = visits[visits >= 2]
    return (int(np.sum(matches >= cap)) if cap is not None else 0), int(len(matches))


def _excess_locations(excess: list[list[float]]) -> tuple[list[float], np.ndarray]:
    """Random-effects fit of log1p(excess) = mu + b_r + eps: each request's location (its best linear
    predictor mu + w_r (mean_r - mu), w_r = tau^2 / (tau^2 + sigma^2 / n_r)) and the quantiles at LEVELS of
    the within-request deviations (requests with >= 2 long runs weighing alike), scaled to the predictive
    spread sigma^2 + the mean posterior variance of a location. Within- and between-request spreads are
    alike in the data (InstructCoder n-gram: sd 1.1 and 1.1): a location at each request's own mean with
    only the leftover scatter makes a request's long runs too alike and, E being exponentiated, too short."""
    counts = np.array([len(x) for x in excess])
    means = np.array([float(np.mean(x)) for x in excess if x])
    if not len(means):
        return [0.0] * len(excess), np.zeros(len(LEVELS))
    mu = float(np.mean(means))
    multi = [np.asarray(x) for x in excess if len(x) >= 2]
    dof = sum(len(x) - 1 for x in multi)
    sigma2 = sum(float(np.sum((x - x.mean()) ** 2)) for x in multi) / dof if dof else 0.0
    n = counts[counts > 0]
    tau2 = max(0.0, float(np.var(means)) - sigma2 * float(np.mean(1.0 / n)))
    weight = lambda k: tau2 / (tau2 + sigma2 / k) if tau2 + sigma2 > 0 else 1.0  # noqa: E731
    locations = [mu + weight(len(x)) * (float(np.mean(x)) - mu) if x else mu for x in excess]
    if not multi or sigma2 <= 0:
        return locations, np.zeros(len(LEVELS))
    values = np.concatenate([(x - x.mean()) * math.sqrt(len(x) / (len(x) - 1)) for x in multi])
    weights = np.concatenate([np.full(len(x), 1.0 / len(x)) for x in multi])
    post = float(np.mean([tau2 * sigma2 / (k * tau2 + sigma2) for k in n])) if tau2 > 0 else 0.0
    order = np.argsort(values)
    cum = (np.cumsum(weights[order]) - 0.5 * weights[order]) / weights.sum()
    spread = math.sqrt(float(np.average(values ** 2, weights=weights)))
    scale = math.sqrt(sigma2 + post) / spread if spread > 0 else 1.0
    return locations, np.interp(LEVELS, cum, values[order]) * scale


def length_strata(lengths: np.ndarray) -> list[np.ndarray]:
    """Index sets of the output-length strata, shortest first (see the module docstring)."""
    order = np.argsort(lengths, kind="stable")
    top = lengths.max()
    capped = order[lengths[order] == top]
    rest = order[lengths[order] < top]
    if len(capped) < MIN_CAPPED or len(rest) < MIN_STRATUM:
        rest, capped = order, order[:0]
    parts = max(1, min(MAX_STRATA, len(rest) // MIN_STRATUM))
    strata = [chunk for chunk in np.array_split(rest, parts) if len(chunk)]
    return strata + ([capped] if len(capped) else [])


def _score_correlation(rows: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Normal-score correlation of one stratum's parameters (the pooled one for fewer than 3 requests)."""
    if len(rows) < 3:
        return fallback
    scores = np.column_stack([_normal_scores(rows[:, j]) for j in range(rows.shape[1])])
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(scores, rowvar=False), nan=0.0)
    np.fill_diagonal(corr, 1.0)
    return corr


def fit_profile(records: Sequence, name: str, proposer: str = "", description: str = "",
                source: dict | None = None) -> AcceptanceProfile:
    """Fit a profile from acceptance records (objects with `.spans` and `.output_tokens`); pure numpy."""
    fit = fit_requests(records, name)
    table, lengths = fit.table[:, :len(PARAMS)], fit.table[:, len(PARAMS)].astype(np.int64)
    groups = length_strata(lengths)
    end_copy = fit_end_copy(fit.long_runs) if fit.cap else {}
    scores = np.vstack([np.column_stack([_normal_scores(table[g, j]) for j in range(len(PARAMS))]) for g in groups])
    corr = np.corrcoef(scores, rowvar=False) if len(table) > 2 else np.eye(len(PARAMS))
    corr = np.nan_to_num(corr, nan=0.0)
    np.fill_diagonal(corr, 1.0)
    strata = [{"min_output_tokens": 1 if i == 0 else int(lengths[g].min()), "requests": int(len(g)),
               "quantiles": {p: [round(float(q), 6) for q in np.quantile(table[g, j], LEVELS, method="inverted_cdf")]
                             for j, p in enumerate(PARAMS)},
               "correlation": [[round(float(c), 4) for c in row] for row in _score_correlation(table[g], corr)],
               **({"members": [[round(float(x), 4) for x in row] for row in table[g]]} if len(g) < MIN_STRATUM
                  else {"lead_hazard": lead_hazard([fit.usable[j] for j in g], [fit.firsts[j] for j in g])}),
               **({"member_end_copy": [member_end_copy(fit.long_runs[j]) for j in g]}
                  if end_copy and len(g) < MIN_STRATUM else {}),
               **({"end_copy": stratum_end_copy([fit.long_runs[j] for j in g], end_copy)}
                  if end_copy and len(g) >= MIN_STRATUM else {})}
              for i, g in enumerate(groups)]
    profile = AcceptanceProfile(
        name=name, proposer=proposer, description=description,
        position_shape=[round(float(x), 6) for x in fit.position_shape],
        continuation={f"{bucket_name(bucket)}/d{d + 1}": {str(x - MAX_CONTINUATION): round(float(p), 6)
                                                            for x, p in enumerate(laws[d])}
                      for bucket, laws in zip(CONTINUATION_BUCKETS, fit.continuation) for d in range(MAX_CUT)},
        strata=strata, correlation=[[round(float(c), 4) for c in row] for row in corr], source=dict(source or {}),
        measurement_cap=fit.cap, excess_residual=[round(float(q), 6) for q in fit.excess_residual],
        lead_hazard=fit.lead_hazard, first_match_offsets=fit.first_offsets,
        end_copy=end_copy)
    profile.summary = fit_summary(records, fit.usable, fit.first_match)
    return profile


def _fill_shape(shape: np.ndarray) -> np.ndarray:
    """Positions no request reached take the last measured rate (0.5 if none)."""
    out, last = shape.copy(), 0.5
    for j in range(len(out)):
        if np.isnan(out[j]):
            out[j] = last
        last = out[j]
    return np.clip(out, 1e-4, 1 - 1e-4)


def _request_mean(values: list[float], default: float) -> float:
    return float(np.mean(values)) if values else default


def _bucket_mean(rows: list[np.ndarray]) -> np.ndarray:
    """Per-request normalised histograms averaged over the requests that have pairs; X = 0 if none."""
    normed = [h / h.sum() for h in rows if h.sum()]
    if normed:
        return np.mean(normed, axis=0)
    hist = np.zeros(2 * MAX_CONTINUATION + 1)
    hist[MAX_CONTINUATION] = 1.0
    return hist


def fit_summary(records: Sequence, usable: list, first_match: float) -> dict:
    """The numbers a reader checks a fit by: sizes, replayed acceptance lengths, per-request spread, matches."""

    outputs = np.array([int(r.output_tokens) for r in records])
    alphas = np.array([per_request_alpha(v) for v, _, _, _ in usable])
    trans = sum((_transitions(v) for v, _, _, _ in usable), np.zeros((2, 2)))
    replay = {}
    for k in (1, 3, 5, 7):
        per = [replay_steps(r.spans, k) for r in records]
        steps = sum(len(s) for s in per)
        tokens = sum(sum(s) for s in per)
        per_req = [sum(s) / len(s) for s in per if s]
        replay[f"k{k}"] = {"acceptance_length_token_weighted": round(tokens / steps, 4) if steps else 1.0,
                           "acceptance_length_request_mean": round(float(np.mean(per_req)), 4) if per_req else 1.0}
    match_visits = np.concatenate([v for v, _, _, _ in usable])
    return {
        "requests": len(records), "output_tokens_total": int(outputs.sum()), "output_tokens_max": int(outputs.max()),
        "output_tokens_mean": round(float(outputs.mean()), 2),
        "prompt_tokens_mean": round(float(np.mean([int(r.prompt_tokens) for r in records])), 2),
        "replay_acceptance_length": replay,
        "per_request_alpha_quantiles": {f"p{int(q * 100)}": round(float(np.quantile(alphas, q)), 4)
                                        for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
        "per_request_alpha_mean": round(float(alphas.mean()), 4),
        "per_request_alpha_beta_fit": _beta_fit(alphas),
        "first_position_match_prob": round(first_match, 4),
        "pooled_match_transitions": {"p01": round(float(trans[0, 1] / max(trans[0].sum(), 1)), 4),
                                     "p11": round(float(trans[1, 1] / max(trans[1].sum(), 1)), 4)},
        "fresh_match_fraction_pooled": round(float(np.mean(match_visits >= 2)), 4),
        "mean_span_given_match_pooled": round(float(match_visits[match_visits >= 2].mean()), 4)
        if np.any(match_visits >= 2) else None,
    }


__all__ = ["RequestFit", "fit_profile", "fit_requests", "fit_summary", "length_strata"]

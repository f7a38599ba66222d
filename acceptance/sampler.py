"""Sampling from an acceptance profile: each simulated request gets its own seeded `RunProcess`.

`ProfileSampler.draw(output_tokens)` picks the request's parameters in the stratum of its output
length (a Gaussian copula over the stratum's quantiles, or one whole member of a small stratum);
`RunProcess.current_span` gives the span of the step about to run and `advance` moves the run by
the tokens the step emitted (acceptance/profile.py describes the model).
"""
from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from specdec_sim.acceptance.copies import room_bin
from specdec_sim.acceptance.profile import (LEVELS, MAX_CONTINUATION, PARAMS, AcceptanceProfile, _logit, _sigmoid,
                                            continuation_key, continuation_keys, log_excess)

_NORMAL = NormalDist()


@dataclass(slots=True)
class RunProcess:
    """One request's acceptance process (its own parameters; state advances only with emitted tokens)."""

    p01: float
    p11: float
    rates: tuple[float, ...]  # conditional rates of draft positions 1..MAX_POSITION
    continuation_cdf: dict[str, tuple[float, ...]]  # continuation_key -> CDF over X
    cap: int = 0  # the measurement's longest span (0: none): fresh spans stop there
    excess_loc: float = 0.0  # location of log1p(E): a run reaching the cap is cap + E tokens long
    long: float = 0.0  # P(a match is a long run, at the cap: copying) when the measurement had a cap
    excess_residual: tuple[float, ...] = ()  # residual quantiles of log1p(E) at LEVELS
    run_left: int = 0  # tokens left of a long (capped) run; 0: none
    last_emitted: int = 1
    last_match: bool | None = None  # match state of the previous fresh position (None: none yet)
    remaining: int = 0  # tokens of the current run not yet emitted (0: the next position is fresh)
    span: int = 0  # the current step's span (0: not drawn yet)
    first_match: float = 0.5
    lead_hazard: tuple[float, ...] = ()  # P(first match at fresh visit j | none before); () = first_match, chain
    first_long: float | None = None  # P(long) of the request's first match (None: `long`)
    first_rates: tuple[float, ...] = ()  # position rates of a first match below the cap (() : `rates`)
    first_excess: float = 0.0  # added to log1p(E) of a long first match
    tokens_left: int = 0  # output tokens still to come (0: not known): a long run is drawn to end before them
    end_bounds: tuple[int, ...] = ()  # room bins of the share of long runs that copy to the end of the output
    end_first: tuple[float, ...] = ()  # per room bin, for the request's first long run
    end_later: tuple[float, ...] = ()  # for its later ones
    end_own: tuple[float, float] | None = None  # a dealt member's own (first, later) shares instead
    end_tail_cdf: tuple[float, ...] = ()  # CDF of the tokens after such a copy; () = no copies
    long_runs: int = 0  # long runs drawn so far
    fresh_seen: int = 0  # fresh positions drawn so far
    matched: bool = False  # whether a fresh position has matched yet

    @property
    def alpha(self) -> float:
        """Per-token rate with the same definition as the fit's per-request alpha: 1 - 1 / E[fresh span]."""
        stationary = self.p01 / (1.0 - self.p11 + self.p01) if (1.0 - self.p11 + self.p01) > 0 else 1.0
        survive, extra, last = 1.0, 1.0, len(self.rates) - 1
        for j in range(1, (self.cap or 256) - 1):
            survive *= self.rates[min(j - 1, last)]
            extra += survive
            if survive < 1e-9:
                break
        mean_span = 1.0 + stationary * extra
        return 1.0 - 1.0 / mean_span

    def current_span(self, rng: random.Random) -> int:
        """The span of the step about to run (drawn once per step, from the run state)."""
        if self.span:
            return self.span
        if self.remaining > 0:
            r = self.remaining
            if self.run_left > 0:  # inside a long run: the span is what is left of it, at most the cap
                self.span = min(self.cap, self.run_left)
                return self.span
            cdf = self.continuation_cdf[continuation_key(r, self.last_emitted)]
            u, x = rng.random(), 0
            while x < len(cdf) - 1 and u > cdf[x]:
                x += 1
            self.span = max(1, self.remaining + x - MAX_CONTINUATION)
            return self.span
        first = not self.matched
        if first and self.lead_hazard:  # the lead: its own hazard per fresh visit until the first match
            p = self.lead_hazard[min(self.fresh_seen, len(self.lead_hazard) - 1)]
        else:
            p = self.first_match if self.last_match is None else (self.p11 if self.last_match else self.p01)
        self.fresh_seen += 1
        match = rng.random() < p
        self.last_match = match
        self.matched = self.matched or match
        long = self.first_long if first and self.first_long is not None else self.long
        span = 1
        if match and self.cap and rng.random() < long:
            span = self.cap
        elif match:  # a run below the cap (when there is one): the position rates
            rates = self.first_rates if first and self.first_rates else self.rates
            span, last, top = 2, len(rates) - 1, (self.cap - 1 if self.cap else 1 << 20)
            while span < top and rng.random() < rates[min(span - 2, last)]:
                span += 1
        if self.cap and span >= self.cap:  # a long run: draw its length
            self.run_left = self._long_run_length(first, rng)
            self.long_runs += 1
        self.span = span
        return span

    def _long_run_length(self, first: bool, rng: random.Random) -> int:
        """Tokens of a long run starting now: a copy to the end of the output (all but a drawn tail), else
        cap + E from the request's length law, drawn to end before the output does when its length is known."""
        left = self.tokens_left
        if left > 0 and self.end_tail_cdf:
            if self.end_own is not None:  # a dealt member: as its own long runs did
                share = self.end_own[0] if self.long_runs == 0 else self.end_own[1]
            else:
                shares = self.end_first if self.long_runs == 0 else self.end_later
                share = shares[room_bin(left, self.end_bounds)]
            if share > 0.0 and rng.random() < share:
                u, tail = rng.random(), 0
                while tail < len(self.end_tail_cdf) - 1 and u > self.end_tail_cdf[tail]:
                    tail += 1
                return max(self.cap, left - tail)
        loc = self.excess_loc + (self.first_excess if first else 0.0)
        top = len(LEVELS) - 1
        if left > 0:
            top = self._residual_level(log_excess(left - 1, self.cap) - loc)
        u = rng.random() * top
        lo = int(u)
        hi = min(lo + 1, len(LEVELS) - 1)
        resid = self.excess_residual[lo] + (u - lo) * (self.excess_residual[hi] - self.excess_residual[lo])
        return self.cap + int(round(math.expm1(max(0.0, loc + resid))))

    def _residual_level(self, limit: float) -> float:
        """The level (0..len(LEVELS) - 1, interpolated) up to which the excess residual quantiles stay <= limit."""
        q = self.excess_residual
        i = bisect.bisect_right(q, limit) - 1
        if i < 0:
            return 0.0
        if i >= len(q) - 1:
            return float(len(q) - 1)
        return i + ((limit - q[i]) / (q[i + 1] - q[i]) if q[i + 1] > q[i] else 0.0)

    def advance(self, emitted: int) -> None:
        """The step emitted `emitted` tokens: the run continues if it was cut short."""
        if self.tokens_left > 0:
            self.tokens_left = max(1, self.tokens_left - emitted)
        span = self.span or 1
        if self.run_left > 0:
            self.run_left = max(0, self.run_left - emitted)
            self.remaining = self.run_left
        else:
            self.remaining = span - emitted if emitted < span else 0
        self.last_emitted = emitted
        self.span = 0


def _root(corr: np.ndarray) -> np.ndarray:
    """A matrix square root of a correlation matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((corr + corr.T) / 2)
    return v * np.sqrt(np.clip(w, 0.0, None))


def continuation_cdf(law: dict[str, float]) -> tuple[float, ...]:
    probs = np.array([float(law.get(str(x), 0.0)) for x in range(-MAX_CONTINUATION, MAX_CONTINUATION + 1)])
    return tuple(float(c) for c in np.cumsum(probs) / probs.sum())


class ProfileSampler:
    """Seeded per-request processes from a profile: a Gaussian copula over the quantiles of the
    request's output-length stratum (`stratify=False`: the stratum of all requests pooled is not
    stored, so it uses the stratum of median length)."""

    def __init__(self, profile: AcceptanceProfile, seed: int, stratify: bool = True):
        self.profile = profile
        self._rng = np.random.default_rng(seed)
        self.levels = np.asarray(profile.levels)
        self.starts = [int(s["min_output_tokens"]) for s in profile.strata]
        self.q = [{p: np.asarray(s["quantiles"][p]) for p in PARAMS} for s in profile.strata]
        self.stratify = stratify
        self._roots = [_root(np.asarray(s.get("correlation", profile.correlation), dtype=float))
                       for s in profile.strata]
        self.shape_logit = _logit(np.asarray(profile.position_shape))
        self.continuation_cdf = {key: continuation_cdf(profile.continuation[key]) for key in continuation_keys()}
        self.first_match = float(profile.summary.get("first_position_match_prob", 0.5))
        self.cap = int(profile.measurement_cap or 0)
        self.excess_residual = tuple(float(x) for x in (profile.excess_residual or [0.0] * len(LEVELS)))
        self._dealt: dict[int, list[int]] = {}
        self.lead_hazard = tuple(float(h) for h in profile.lead_hazard)
        copy = profile.end_copy or {}
        tail = copy.get("tail", {})
        probs = np.array([float(tail.get(str(t), 0.0)) for t in range(max((int(k) for k in tail), default=-1) + 1)])
        self.end_tail_cdf = tuple(float(c) for c in np.cumsum(probs) / probs.sum()) if probs.sum() > 0 else ()
        self.end_bounds = tuple(int(b) for b in copy.get("room_bounds", []))
        pooled = (tuple(float(x) for x in copy.get("first", [])), tuple(float(x) for x in copy.get("later", [])))
        # a stratum's own (first, later) shares where it has them: the code-edit copies are most common in short answers
        self.end_by_stratum = [(tuple(float(x) for x in s["end_copy"]["first"]),
                                tuple(float(x) for x in s["end_copy"]["later"])) if s.get("end_copy") else pooled
                               for s in profile.strata]
        # a stratum's own lead hazard where it has one (the lead grows with the output: InstructCoder n-gram's
        # shortest sixth of requests spends 15 % of its tokens before the first match, the pooled hazard 21 %)
        self.lead_by_stratum = [tuple(float(h) for h in s["lead_hazard"]) if s.get("lead_hazard") else self.lead_hazard
                                for s in profile.strata]
        self.offsets = {k: float(profile.first_match_offsets.get(k, 0.0)) for k in ("logit_long", "excess", "shift")}

    def stratum(self, output_tokens: int) -> int:
        if not self.stratify:
            return (len(self.starts) - 1) // 2
        return max(i for i, start in enumerate(self.starts) if start <= max(output_tokens, 1))

    def draw(self, output_tokens: int) -> RunProcess:
        """A new request's process: one normal vector per request from the seeded stream, through the copula to
        the stratum's step quantiles (no interpolation between requests: a stratum of four loops yields those four)."""
        stratum = self.stratum(output_tokens)
        members = self.profile.strata[stratum].get("members")
        if members:  # a small stratum (e.g. four repetition loops): one of its requests' fitted parameters, whole,
            # dealt in shuffled rounds (every member used as evenly as the request count allows, as replay deals
            # records): drawn with replacement, four loops that are a third of all tokens come out as one loop twice
            queue = self._dealt.setdefault(stratum, [])
            if not queue:
                queue.extend(self._rng.permutation(len(members)).tolist())
            member = queue.pop(0)
            p01, p11, shift, excess_loc, logit_long = members[member]
            return self._for_output(self.process_for(float(_sigmoid(p01)), float(_sigmoid(p11)), shift, excess_loc,
                                                     logit_long, self.lead_by_stratum[stratum]), output_tokens,
                                    stratum, member)
        q = self.q[stratum]
        z = self._roots[stratum] @ self._rng.standard_normal(len(PARAMS))
        u = [_NORMAL.cdf(float(x)) for x in z]
        top = len(self.levels) - 1  # the stored step quantiles are read at the nearest level: values of real
        p01, p11, shift, excess_loc, logit_long = (float(q[p][min(top, int(ui * top + 0.5))])
                                                   for ui, p in zip(u, PARAMS))
        return self._for_output(self.process_for(float(_sigmoid(p01)), float(_sigmoid(p11)), shift, excess_loc,
                                                 logit_long, self.lead_by_stratum[stratum]), output_tokens,
                                stratum)

    def _for_output(self, process: RunProcess, output_tokens: int, stratum: int, member: int | None = None
                    ) -> RunProcess:
        """The process of a request of `output_tokens` (its first is the prefill's): a long run copies to the end
        of the output as often as the data's long runs with as much output left did (a dealt member: as its own
        did, so the one repetition loop its lookup copied to the end stays that one loop); the others end before
        the output does."""
        process.tokens_left = max(1, int(output_tokens) - 1)
        if self.end_tail_cdf:
            process.end_bounds, process.end_tail_cdf = self.end_bounds, self.end_tail_cdf
            process.end_first, process.end_later = self.end_by_stratum[stratum]
            own = self.profile.strata[stratum].get("member_end_copy")
            if member is not None and own:
                process.end_own = (float(own[member][0]), float(own[member][1]))
        return process

    def process_for(self, p01: float, p11: float, shift: float, excess_loc: float = 0.0,
                    logit_long: float = -30.0, lead_hazard: tuple[float, ...] | None = None) -> RunProcess:
        """A process with given parameters (tests, and replaying a fitted request); `lead_hazard` defaults to
        the profile's pooled one."""
        rates = tuple(float(r) for r in _sigmoid(self.shape_logit + shift))
        first_rates = tuple(float(r) for r in _sigmoid(self.shape_logit + shift + self.offsets["shift"]))
        return RunProcess(p01, p11, rates, self.continuation_cdf, first_match=self.first_match, cap=self.cap,
                          excess_loc=excess_loc, excess_residual=self.excess_residual,
                          long=float(_sigmoid(logit_long)) if self.cap else 0.0,
                          lead_hazard=self.lead_hazard if lead_hazard is None else lead_hazard,
                          first_long=float(_sigmoid(logit_long + self.offsets["logit_long"])) if self.cap else 0.0,
                          first_rates=first_rates, first_excess=self.offsets["excess"])




__all__ = ["ProfileSampler", "RunProcess", "continuation_cdf"]

"""Acceptance profiles: a compact, per-request acceptance model fitted from an acceptance trace.

The model (one per proposer and dataset) describes a request's output as a sequence of RUNS. A
run starts at a *fresh* position (the first step, or right after a rejected draft's correction
token) with a span S: S = 1 means no draft token survives, S >= 2 means S - 1 drafts would be
accepted with an unlimited proposal. A step with proposal k emits e = min(S, k + 1); if e < S the
run goes on: the next step starts inside it with span (S - e) + X, X drawn from the measured
*continuation* law (a draft re-proposed from later in a correct run often reaches further, or
less far, than the old one). Fitted per request, on the fresh positions an unlimited-proposal
replay visits (the last one is censored when it reaches the end of the output):

* **match process**: whether a fresh position's span is >= 2 ("match") is a 2-state Markov chain
  over consecutive fresh positions, P(match | previous no match) = p01, P(match | previous match)
  = p11; so matches cluster in runs (mean run length 1 / (1 - p11) fresh positions).
  **A span of 1 cannot tell "prompt lookup found no n-gram" from "its first draft was rejected".**
  We count every span-1 position as *no match*: the simulated server then neither proposes nor
  verifies there, so verify work on lookups whose first draft fails is not counted (a lower bound
  on wasted verification). For draft models and EAGLE (which always propose) "no match" simply
  means the first draft is rejected; the law of the tokens is the same.
* **the lead** (fresh visits before a request's first match) has its own hazard per visit,
  `lead_hazard` (MAX_LEAD - 1 visits, then one tail rate), pooled and per length stratum
  (`strata[i].lead_hazard`, in strata of >= MIN_STRATUM requests: the lead grows with the output),
  and the chain is fitted on the visits from the first match on: prompt lookup cannot match before
  its n-gram exists (InstructCoder n-gram: 68 % of requests open with exactly six span-1 positions).
* **the first match** differs from later ones by pooled offsets, `first_match_offsets` (logit of
  P(long), log1p of the excess, logit shift of the position rates), each solved so the fitted
  requests predict what their first matches show (InstructCoder n-gram: 41 % of first matches
  are long copies of the prompt, 13 % of later ones).
* **acceptance given a match**: draft position j >= 1 (0-based) survives, given the earlier ones
  did, with conditional rate sigmoid(logit h_j + shift_r): a pooled position shape h_j and a
  per-request logit shift solved so the request's mean span equals its own (mean-span matching,
  PRIOR_SPAN_VISITS pseudo-visits at the requests' mean; acceptance/shift.py). Positions
  beyond MAX_POSITION reuse the last rate.
* **long runs** (data with a measurement cap, `measurement_cap`: the n-gram files' longest
  proposal was 20 drafts, so spans pile up at 21): with per-request probability `long_r` a match
  is a copy at the cap, whose true length is cap + E with log1p(E) = excess_loc_r + a pooled
  residual; inside it every step's span is min(cap, what is left). The position shape is fitted on
  the runs below the cap. A span at the cap is censored, and the position it leads to lies inside
  the same run (not a fresh start). A long run's length is what an unlimited-proposal replay emits
  from its start to the end of the first visit below the cap. log1p(E) is a random-effects fit
  (request location = best linear predictor, residual = within-request scatter): within- and
  between-request spreads are alike in the data, so a request's long runs are not all one length.
  A long run that copies to the end of the output (code edits copy the rest of the file) is its
  own regime, by the output left where it starts (`end_copy`; acceptance/copies.py); the
  others are drawn to end before the output does.

Across requests, PARAMS = (logit p01, logit p11, shift, excess_loc, logit long) are stored as 41
quantiles each per output-length STRATUM, plus the correlation of their within-stratum normal
scores (a Gaussian copula): `ProfileSampler` (acceptance/sampler.py) gives each simulated
request its own parameters, drawn in the stratum of its output length. Strata: requests that
share the largest length (>= 3 of them: outputs cut at max_tokens, in this data repetition loops,
which accept very differently) form the top stratum, which stores its requests' fitted parameter
vectors whole (five numbers each, drawn one request at a time: mixing the parameters of four
loops through a copula gives no loop at all); the others are split into up to MAX_STRATA
equal-count length strata (>= 20 requests each); the small stratum's members are dealt
in shuffled rounds, as replay deals records. Long requests carry most tokens, so this
matters: on InstructCoder five 8,192-token outputs are 31 % of all tokens. Every statistic
weighs REQUESTS equally, not tokens, so one 8,192-token repetition loop (ShareGPT n-gram) is one
request among 310, not 3.6 % of the pooled tokens. Only these derived statistics are stored
(JSON), never a request's spans. Fitting: acceptance/fit.py.

The per-request per-token rate alpha_r = 1 - 1 / mean(fresh spans) (the geometric MLE) is reported
in the summary with its quantiles and a moment-fitted Beta and its Kolmogorov-Smirnov distance,
so one sees how far a single Beta (the published-preset model) is from the data.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from specdec_sim.safe_output import write_text_atomic

MAX_POSITION = 24  # conditional rates for draft positions 1..MAX_POSITION; beyond, the last repeats
MAX_LEAD = 32  # lead hazards for fresh visits 0..MAX_LEAD - 2, then one tail rate
MAX_CONTINUATION = 8  # continuation offsets X in -8..8 (clipped)
LEVELS = tuple(i / 40 for i in range(41))
PARAMS = ("logit_p01", "logit_p11", "shift", "excess_loc", "logit_long")
MIN_STRATUM = 20  # requests per length stratum (the capped-length stratum needs only MIN_CAPPED)
MIN_CAPPED = 3
MAX_STRATA = 6  # equal-count length strata below the capped length
PRIOR_TRANSITIONS = 2.0  # pseudo-transitions pulling a request's chain toward the pooled one
PRIOR_SPAN_VISITS = 0.25  # pseudo-visits at the requests' mean span pulling a request's shift (acceptance/shift.py)
PRIOR_EXCESS_RUNS = 0.25  # pseudo-runs pulling a request's long-run length to the mean (small: one loop is real)
PRESET_PACKAGE = "specdec_sim.acceptance"
PRESET_DIR = "profiles"


class ProfileError(ValueError):
    """A profile that cannot be read or built; one line."""


@dataclass
class AcceptanceProfile:
    """Fitted acceptance model of one proposer on one prompt set (see the module docstring)."""

    name: str
    proposer: str
    description: str
    position_shape: list[float]  # h_j for draft positions j = 1..MAX_POSITION
    continuation: dict[str, dict[str, float]]  # "<r bucket>/d<e>" (e.g. "3-6/d4") -> P(X = x), x in -8..8
    strata: list[dict]  # {"min_output_tokens", "requests", "quantiles": {PARAMS -> values at LEVELS}}, ascending
    correlation: list[list[float]]  # within-stratum normal-score correlation of PARAMS
    measurement_cap: int | None = None  # longest span the measurement could see (None: none detected)
    excess_residual: list[float] = field(default_factory=list)  # log1p(long-run excess) - request location, at LEVELS
    lead_hazard: list[float] = field(default_factory=list)  # P(first match at fresh visit j | none before); [] = chain
    first_match_offsets: dict = field(default_factory=dict)  # first match vs later: logit_long, excess, shift
    end_copy: dict = field(default_factory=dict)  # long runs that copy to the end: room_bounds, first, later, tail
    summary: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    levels: list[float] = field(default_factory=lambda: list(LEVELS))
    format: str = "specdec-sim acceptance profile v1"


# remaining-run lengths r sharing one continuation law. r = 1 and r = 2 apart: their laws differ (InstructCoder
# EAGLE, d = 4: P(X > 0) is 0.41 at r = 1 and 0.31 at r = 2, and only r = 2 can fall, X = -1), and one law for
# both gave r = 1 too many span-1 steps (X = -1 clipped to a span of 1)
CONTINUATION_BUCKETS = ((1, 1), (2, 2), (3, 6), (7, 1 << 30))


def bucket_name(bucket: tuple[int, int]) -> str:
    if bucket[1] >= 1 << 30:
        return f"{bucket[0]}+"
    return f"{bucket[0]}" if bucket[0] == bucket[1] else f"{bucket[0]}-{bucket[1]}"


MAX_CUT = 8  # continuation laws per tokens emitted by the cut step, e = 1..MAX_CUT (larger e uses MAX_CUT)


def continuation_key(r: int, e: int) -> str:
    """The continuation law of a run with r tokens left after a step emitted e."""
    bucket = next((b for b in CONTINUATION_BUCKETS if r <= b[1]), CONTINUATION_BUCKETS[-1])
    return f"{bucket_name(bucket)}/d{min(e, MAX_CUT)}"


def continuation_keys() -> list[str]:
    return [f"{bucket_name(b)}/d{d}" for b in CONTINUATION_BUCKETS for d in range(1, MAX_CUT + 1)]


def _logit(p: np.ndarray | float) -> np.ndarray | float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---- files --------------------------------------------------------------------------------------
def save_profile(profile: AcceptanceProfile, path: str | os.PathLike) -> Path:
    """Write the profile as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(asdict(profile), indent=1) + "\n")
    return path


def available_profiles() -> list[str]:
    """Names of the shipped profiles (acceptance/profiles/*.json)."""
    folder = resources.files(PRESET_PACKAGE) / PRESET_DIR
    try:
        return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def load_profile(name_or_path: str | os.PathLike) -> AcceptanceProfile:
    """A shipped profile by name (e.g. `sharegpt-eagle`) or a profile JSON file; ProfileError names the problem."""
    text_name = str(name_or_path)
    if text_name in available_profiles():
        text = (resources.files(PRESET_PACKAGE) / PRESET_DIR / f"{text_name}.json").read_text(encoding="utf-8")
        where = text_name
    else:
        path = Path(text_name)
        if not path.is_file():
            raise ProfileError(f"acceptance profile {text_name!r}: neither a file nor a shipped profile "
                               f"({', '.join(available_profiles()) or 'none shipped'})")
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        data = json.loads(text)
        profile = AcceptanceProfile(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ProfileError(f"{where}: not an acceptance profile: {exc}") from None
    _upgrade_continuation(profile)
    _check(profile, where)
    return profile


def _upgrade_continuation(profile: AcceptanceProfile) -> None:
    """A profile fitted when r = 1 and r = 2 shared one continuation law ("1-2/d<e>") uses it for both."""
    for d in range(1, MAX_CUT + 1):
        shared = profile.continuation.get(f"1-2/d{d}")
        if shared is not None:
            profile.continuation.setdefault(f"1/d{d}", dict(shared))
            profile.continuation.setdefault(f"2/d{d}", dict(shared))


def _is_probabilities(values: object, length: int | None = None) -> bool:
    """A list of numbers in [0, 1] (of `length` of them, when given)."""
    return (isinstance(values, list) and (length is None or len(values) == length)
            and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values))


def log_excess(length: int, cap: int) -> float:
    """log1p(E) of a long run of `length` tokens, E = its tokens past the measurement cap (the scale the
    profile stores a long run's length law on)."""
    return math.log1p(max(0, length - cap))


def _check(profile: AcceptanceProfile, where: str) -> None:
    if len(profile.position_shape) != MAX_POSITION or not all(0 < h < 1 for h in profile.position_shape):
        raise ProfileError(f"{where}: position_shape must hold {MAX_POSITION} rates in (0, 1)")
    if not profile.strata or profile.strata[0].get("min_output_tokens") != 1:
        raise ProfileError(f"{where}: strata must be a non-empty list whose first stratum starts at 1 token")
    for i, stratum in enumerate(profile.strata):
        for p in PARAMS:
            q = stratum.get("quantiles", {}).get(p)
            if q is None or len(q) != len(profile.levels) or any(b < a for a, b in zip(q, q[1:])):
                raise ProfileError(f"{where}: strata[{i}].quantiles.{p} must hold {len(profile.levels)} "
                                   f"non-decreasing values")
    if not all(0 <= h <= 1 for h in profile.lead_hazard):
        raise ProfileError(f"{where}: lead_hazard must hold probabilities in [0, 1]")
    width = len(profile.end_copy.get("room_bounds", [])) + 1  # room bins of the end-copy shares
    for i, stratum in enumerate(profile.strata):
        own = stratum.get("end_copy")
        if own is not None and not (isinstance(own, dict)
                                    and all(_is_probabilities(own.get(k), width) for k in ("first", "later"))):
            raise ProfileError(f"{where}: strata[{i}].end_copy must hold first and later shares per room bin")
        copies = stratum.get("member_end_copy", [])
        if not isinstance(copies, list) or not all(_is_probabilities(c, 2) for c in copies):
            raise ProfileError(f"{where}: strata[{i}].member_end_copy must hold [first, later] probabilities")
        if not _is_probabilities(stratum.get("lead_hazard", [])):
            raise ProfileError(f"{where}: strata[{i}].lead_hazard must hold probabilities in [0, 1]")
    copy = profile.end_copy
    if copy:
        bounds, tail = copy.get("room_bounds"), copy.get("tail")
        shares = [copy.get("first"), copy.get("later")]
        if (not isinstance(bounds, list) or not isinstance(tail, dict) or not tail
                or not all(_is_probabilities(x, len(bounds) + 1) for x in shares)
                or not all(str(k).isdigit() for k in tail) or abs(sum(tail.values()) - 1.0) > 1e-3):
            raise ProfileError(f"{where}: end_copy must hold room_bounds, first and later shares in [0, 1] (one more "
                               f"than bounds), and a tail law of token counts summing to 1")
    offsets = profile.first_match_offsets
    if not all(isinstance(offsets.get(k, 0.0), (int, float)) for k in ("logit_long", "excess", "shift")):
        raise ProfileError(f"{where}: first_match_offsets must map logit_long, excess, shift to numbers")
    corr = np.asarray(profile.correlation, dtype=float)
    if corr.shape != (len(PARAMS), len(PARAMS)):
        raise ProfileError(f"{where}: correlation must be {len(PARAMS)}x{len(PARAMS)}")
    for key in continuation_keys():
        law = profile.continuation.get(key)
        if not isinstance(law, dict) or abs(sum(law.values()) - 1.0) > 1e-3:
            raise ProfileError(f"{where}: continuation[{key!r}] must be probabilities summing to 1")


__all__ = ["AcceptanceProfile", "CONTINUATION_BUCKETS", "LEVELS", "MAX_CONTINUATION", "MAX_CUT", "MAX_LEAD",
           "MAX_POSITION",
           "PARAMS", "ProfileError", "available_profiles", "continuation_key", "continuation_keys", "load_profile",
           "save_profile"]

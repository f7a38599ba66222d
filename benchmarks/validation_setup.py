"""What validate_published.py's sections share: the calibration of each role, the options, the priced quantities.

Each role (an 8B or 70B target with one proposer) uses the first of its calibrations that is shipped, or
the one `--calibration ROLE=NAME|PATH` names; the engine prices it with its drafting style's rule
(`prepared.priced_for_style`). Step and prefill times are priced by the simulator's own cost model, as
the engine generation that measured each source ran: `legacy` (vLLM V1 up to v0.10: PIECEWISE CUDA graphs,
so the calibration's dynamic-k tax, and its own per-request speculation cost) for #20780, #16035 and
SpecDecode-Bench, `current` (full decode graphs) for #32374, SGLang and V0 (#12101).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from specdec_sim.costmodel import (Calibration, CalibrationError, CostModel, available_calibrations, load_calibration,
                                   prefill_terms, step_shape)
from specdec_sim.costmodel.calibration import as_era
from specdec_sim.simulator.config import SimConfig
from specdec_sim.simulator.engine import run_simulation
from specdec_sim.simulator.prepared import priced_for_style
from specdec_sim.traces import Trace

from published_points import ValidationError

# role -> (calibration names in order of preference, drafting style the engine runs it with)
ROLES: dict[str, tuple[tuple[str, ...], str]] = {
    "8b-eagle": (("llama3.1-8b-eagle-h100", "turbospec-llama3-8b-eagle-h100"), "draft"),
    "8b-eagle3": (("llama3.1-8b-eagle3-h100", "turbospec-llama3-8b-eagle-h100"), "draft"),
    "8b-ngram": (("llama3.1-8b-ngram-h100", "turbospec-llama3-8b-eagle-h100"), "ngram"),
    "70b-ngram": (("llama3-70b-tp4-ngram-h100", "turbospec-llama3-70b-tp4-ngram-h100"), "ngram"),
    "70b-eagle": (("llama3-70b-tp4-eagle-h100",), "draft"),
    "70b-draft": (("llama3-70b-tp4-draft1b-h100",), "draft"),
}
KS = range(2, 8)  # #20780 measured k = 2..7
MT_BENCH_PROMPT_TOKENS = 128  # assumed: MT-Bench single-turn prompt with the chat template (not published)
MT_BENCH_OUTPUT_TOKENS = 512  # assumed: outputs up to 512 tokens in the MT-Bench runs (not published)
MT_BENCH_CONTEXT_TOKENS = MT_BENCH_PROMPT_TOKENS + MT_BENCH_OUTPUT_TOKENS // 2  # a decode step's mean context: 384
ERA = {"vllm20780": "legacy", "vllm16035": "legacy", "fig4": "legacy", "sdb": "legacy", "sglang": "current",
       "vllm12101": "current", "vllm32374": "current"}  # the engine generation of each source
FIG4_BATCHES = (1, 64, 128, 512)
KTABLE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TPOT_MAE_PCT, SHARE_PP = 5.0, 5.0  # done-when tolerances (issue 9)


@dataclass(frozen=True)
class Options:
    fig4_context_tokens: int = 1024  # per request in Fig.4 (its dataset is not stated; the builder fits at 1024)
    # per request in the k-table: PR #32374's author is #20780's, whose benchmark is MT-Bench (section 1's context)
    ktable_context_tokens: int = MT_BENCH_CONTEXT_TOKENS
    load_context_tokens: int = 1024  # per request in the 70B comparison
    sim_requests: int = 100  # batch-1 simulated requests per k (section 1b)
    overrides: dict = field(default_factory=dict)  # role -> NAME|PATH
    seed: int = 0
    quick: bool = False  # a smoke run: fewer simulated requests, no V0 load curve


# ---- calibrations ------------------------------------------------------------------------------

def resolve_calibrations(overrides: dict) -> dict[str, Calibration | None]:
    """Role -> the calibration it uses (an override, else the first shipped name), None when none is shipped."""
    unknown = sorted(set(overrides) - set(ROLES))
    if unknown:
        raise ValidationError(f"--calibration: unknown role {unknown[0]!r} (roles: {', '.join(ROLES)})")
    shipped = set(available_calibrations())
    out: dict[str, Calibration | None] = {}
    for role, (names, _) in ROLES.items():
        name = overrides.get(role) or next((n for n in names if n in shipped), None)
        try:
            out[role] = load_calibration(name) if name else None
        except CalibrationError as exc:
            raise ValidationError(f"--calibration {role}={name}: {exc}") from None
    return out


def engine_cost(cal: Calibration, role: str, drafter: bool = True, era: str = "current") -> CostModel:
    """The cost model the engine would run this calibration with (its n-gram drafting rule included), as the engine
    generation `era` ran it (legacy: PIECEWISE graphs and its own per-request speculation cost)."""
    return CostModel(priced_for_style(as_era(cal, era), ROLES[role][1]), drafter=drafter, dynamic_k=era == "legacy")


# ---- the priced quantities -------------------------------------------------------------------

def step_ms(cost: CostModel, batch: int, k: int, context_tokens: int) -> float:
    """One decode step of `batch` requests of `context_tokens` each, all proposing k."""
    return cost.step_time_s(step_shape([k] * batch, batch * context_tokens)) * 1000.0


def prefill_ms(cost: CostModel, prompt_tokens: int) -> float:
    """A step that prefills one prompt alone (the time to first token at batch 1)."""
    return cost.step_time_s(step_shape([], 0, prefill_terms([(prompt_tokens, 0)]))) * 1000.0


def simulated_tpot_ms(cal: Calibration, alpha: float, k: int, opts: Options, era: str = "current") -> float:
    """Mean TPOT of requests 1000 s apart (always batch 1) under fixed:k, identical acceptance alpha, on the engine
    generation `era` (legacy: `--cuda-graphs piecewise` and its per-request speculation cost)."""
    n = opts.sim_requests
    trace = Trace(request_id=np.arange(n), arrival_s=np.arange(n) * 1000.0,
                  prompt_tokens=np.full(n, MT_BENCH_PROMPT_TOKENS), output_tokens=np.full(n, MT_BENCH_OUTPUT_TOKENS),
                  source="validate_published batch-1 trace")
    config = SimConfig(calibration=cal.name, acceptance=repr(alpha), acceptance_spread=0.0, max_k=max(KS),
                       record_steps=False, cuda_graphs="piecewise" if era == "legacy" else "auto")
    return float(run_simulation(trace, config, f"fixed:{k}", seed=opts.seed,
                                calibration=as_era(cal, era)).summary["mean_tpot_ms"])


def rel_error(predicted: float, measured: float) -> float:
    return (predicted / measured - 1.0) * 100.0

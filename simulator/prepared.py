"""A run prepared once from its options: traffic, calibration, truth and policy pricing, engine limits, acceptance.

`prepare_engine(config)` loads the calibration once (the truth: what advances the clock, priced for the
run's drafting style), makes the policies' view of it once (`--policy-calibration`: the truth, its
fitted linear view, or another calibration), resolves the engine's limits and KV-cache size and the
acceptance means. `prepare_run(traffic, config, seed)` adds the requests (`load_traffic`, paced by
`--max-concurrency` as `vllm bench serve` paces them). `simulate` and `sweep` prepare every run through
these two functions, so both check the same things, apply the same defaults and compute one offered
rate; preflight, the engine, the summary and the report all read the one `PreparedRun`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from specdec_sim.acceptance.rates import preset_position_rates, resolve_mean_alpha
from specdec_sim.costmodel import Calibration, CalibrationError, CostModel, DraftCost, load_calibration
from specdec_sim.costmodel.policy_view import policy_calibration
from specdec_sim.simulator.config import ConfigError, SimConfig
from specdec_sim.simulator.engine_mode import EngineLimits, resolve_limits
from specdec_sim.simulator.traffic import TrafficSpec, closed_loop_times, load_traffic
from specdec_sim.traces import Trace


@dataclass(frozen=True)
class PreparedEngine:
    """What every replica of a run is built from, made once per run (whatever the number of policies)."""

    config: SimConfig
    calibration: Calibration  # the truth, priced for the run's drafting style
    policy_calibration: Calibration  # what the policies price candidate steps with (`calibration` for 'same')
    limits: EngineLimits
    num_blocks: int  # KV-cache blocks per replica
    mean_alpha: float  # mean per-token acceptance (preset or rate)
    position_rates: tuple[float, ...]  # conditional per-position rates (--acceptance-mode per-position)
    warnings: tuple[str, ...] = ()  # one line each, for the command to print (e.g. an engine the calibration
    #                                 does not describe)

    def cost_model(self, drafter: bool = True, dynamic_k: bool = False) -> CostModel:
        """The true cost model; `drafter` False for a run that never speculates (no proposer loaded, so no
        draft prefill is charged); `dynamic_k` for a policy that varies k (it pays the dynamic-k tax)."""
        return CostModel(self.calibration, drafter=drafter, dynamic_k=dynamic_k)

    def policy_cost_model(self, dynamic_k: bool = False) -> CostModel:
        """What the policy prices candidate steps with (its own tax included: it knows how its engine runs)."""
        return CostModel(self.policy_calibration, dynamic_k=dynamic_k)


@dataclass(frozen=True)
class PreparedRun:
    """One run's requests and engine: what `simulate` and `sweep` hand to the engine, the summary and the report."""

    traffic: TrafficSpec
    trace: Trace
    seed: int
    engine: PreparedEngine

    @property
    def config(self) -> SimConfig:
        return self.engine.config


def priced_for_style(cal: Calibration, style: str) -> Calibration:
    """`cal` as it prices `style`'s drafting; CalibrationError (one line) for a proposer it cannot price."""
    if style == "ngram":
        if cal.draft.kind == "fraction":
            return cal
        if cal.ngram_fraction_of_target > 0:
            return replace(cal, draft=DraftCost(kind="fraction", fraction_of_target=cal.ngram_fraction_of_target))
        raise CalibrationError(f"--style ngram: calibration {cal.name} prices {cal.draft.kind} drafting and states no "
                               "n-gram cost (ngram_fraction_of_target); use an n-gram calibration")
    if cal.draft.kind == "fraction":
        raise CalibrationError(f"--style {style}: calibration {cal.name} prices prompt lookup (n-gram) drafting only; "
                               "use --style ngram or a draft-model/EAGLE calibration")
    return cal


def policy_view(truth: Calibration, config: SimConfig) -> Calibration:
    """What the policies price with (--policy-calibration: fitted, same, or a calibration), priced for the style."""
    view = policy_calibration(truth, config.policy_calibration.strip(), load_calibration)
    return view if view is truth else priced_for_style(view, config.style)


def prepare_engine(config: SimConfig, calibration: Calibration | None = None) -> PreparedEngine:
    """Validate `config` and load everything its engine needs, once: the one-line errors of a bad calibration,
    policy view, acceptance or KV-cache size come from here, before anything runs. `calibration` replaces the
    one `config` names (the Python API's way to run an in-memory calibration)."""
    config.validate()
    mean_alpha = resolve_mean_alpha(config.acceptance)
    truth = priced_for_style(calibration or load_calibration(config.calibration), config.style)
    view = policy_view(truth, config)
    num_blocks = config.kv_blocks or truth.memory.num_kv_blocks(config.block_size)  # KV bytes fixed, blocks scale
    if num_blocks < 1:
        raise ConfigError(f"--block-size {config.block_size}: calibration {truth.name} has memory for no KV-cache "
                          "block of that size; give a smaller --block-size or --kv-blocks")
    rates = tuple(config.position_rates) or preset_position_rates(config.acceptance)
    limits = resolve_limits(config, truth)
    return PreparedEngine(config, truth, view, limits, num_blocks, mean_alpha, rates, engine_warnings(limits, truth))


def engine_warnings(limits, cal: Calibration) -> tuple[str, ...]:
    """A run whose engine is not the one the calibration describes prices its steps with the other engine's costs."""
    if limits.engine == cal.engine:
        return ()
    if limits.engine == "v0":
        return (f"--engine v0: calibration {cal.name} describes a vLLM V1 engine, so steps are priced without V0's "
                f"batch-expansion scoring and CUDA-graph limit (use a -v0 calibration: {', '.join(v0_builds())})",)
    return (f"--engine v1: calibration {cal.name} describes vLLM V0 (batch-expansion scoring); use its V1 calibration",)


def v0_builds() -> list[str]:
    """The shipped calibrations that describe vLLM V0."""
    from specdec_sim.costmodel import available_calibrations
    return [name for name in available_calibrations() if name.endswith("-v0")]


def prepare_run(traffic: TrafficSpec, config: SimConfig, seed: int = 0,
                engine: PreparedEngine | None = None) -> PreparedRun:
    """The requests of `traffic` (seeded synthetic arrivals, or the trace cut and re-timed; all ready at 0 in a
    closed loop without a rate) and the engine of `config` (or an engine prepared earlier for it)."""
    engine = engine or prepare_engine(config)
    trace = closed_loop_times(load_traffic(traffic, seed), traffic.rate, config.max_concurrency)
    if len(trace) == 0:
        raise ConfigError("--trace: no requests left after --max-requests/--duration")
    return PreparedRun(traffic, trace, seed, engine)


__all__ = ["PreparedEngine", "PreparedRun", "prepare_engine", "prepare_run", "priced_for_style", "policy_view"]

"""Simulation configuration: one dataclass holding every engine option, with validation.

The CLI, the sweep runner and tests all build a `SimConfig`; `SimConfig.validate()` raises
`ConfigError` with a one-line message naming the offending option. Each field declares its
command-line option (simulator/options.py), so `simulate --help` and `sweep --help` are derived
from this file: defaults, choices, units and help are written once, here.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from specdec_sim.costmodel import DEFAULT_CALIBRATION, available_calibrations
from specdec_sim.acceptance.rates import PRESETS
from specdec_sim.simulator.engine_mode import ENGINES
from specdec_sim.simulator.options import option, parse_float, parse_float_list, parse_int

ROUTERS = ("round-robin", "least-tokens", "random")
PREFIX_CACHING = ("auto", "on", "off")
CUDA_GRAPHS = ("auto", "full", "piecewise")
STYLES = ("draft", "ngram", "tree")
ACCEPTANCE_MODES = ("independent", "batch", "per-position")
MAX_CLOCK_S = 1e9  # simulated seconds: below this, float64 seconds resolve 0.12 us (~31.7 years of clock)
MAX_STEP_NOISE = 3.0  # log-normal sigma: beyond this a step's time spans orders of magnitude
MAX_REPLICAS = 4096  # each replica is a SimPy process with its own cache and policy state
INT_LIMITS = {  # option -> (field, lowest, highest): beyond these a value is a typo, not a configuration
    "replicas": ("replicas", 1, MAX_REPLICAS),
    "max-num-seqs": ("max_num_seqs", 1, 1 << 20),
    "max-num-batched-tokens": ("max_num_batched_tokens", 1, 1 << 31),
    "block-size": ("block_size", 1, 1 << 16),
    "max-k": ("max_k", 0, 64),
    "max-model-len": ("max_model_len", 0, 1 << 31),
    "max-tokens": ("max_tokens", 1, 1 << 31),
}
OPTIONAL_INTS = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "max_tokens")  # None: engine default


class ConfigError(ValueError):
    """An impossible or malformed simulation option."""


@dataclass
class SimConfig:
    """Every engine option of one simulation; each field is also a `simulate`/`sweep` option."""

    calibration: str = option(DEFAULT_CALIBRATION, "step-time calibration: a JSON path or a shipped name ("
                              + ", ".join(available_calibrations()) + ")", metavar="NAME|PATH")
    policy_calibration: str = option("fitted", "what goodput policies price candidate steps with: 'fitted' (a "
                                     "linear fit of the true step times over a profiling grid, made once, as the "
                                     "TurboSpec authors fit theirs), 'same' (the true model itself: an upper bound no "
                                     "real controller has), or a calibration NAME|PATH", metavar="fitted|same|NAME|PATH")
    step_time_noise: float = option(0.0, "log-normal sigma of each true step time around the calibration (0 = exact; "
                                         "mean-preserving, seeded)", parse=parse_float)
    max_concurrency: int | None = option(None, "closed loop, as vllm bench serve --max-concurrency: at most N requests "
                                               "in flight, the next sent when one ends (all ready at once unless "
                                               "--rate paces them)", parse=parse_int, group="traffic")
    concurrency_ramp_up_s: float = option(0.0, "with --max-concurrency: open the N slots one by one over SECONDS",
                                          flag="--concurrency-ramp-up", unit="s", parse=parse_float, group="traffic")
    replicas: int = option(1, f"model replicas behind the router (at most {MAX_REPLICAS})", parse=parse_int)
    router: str = option("round-robin", "how arrivals are spread over replicas", choices=ROUTERS)
    engine: str = option("auto", "vLLM engine modelled: v1 (unified scheduler: decodes and drafts first, prefill chunks "
                                "fill the token budget, speculation in mixed steps, prefix caching), v0 (2024: a step "
                                "with prefill carries only prefill, as SmartSpec's V0; priced with V0's batch-expansion "
                                "scoring by a -v0 calibration), or auto (the engine the calibration describes: v1, "
                                "v0 for the -v0 calibrations)", choices=ENGINES)
    max_num_seqs: int | None = option(None, "vLLM --max-num-seqs: requests in a replica's running batch; unset: the "
                                            "engine's (1024 on H100-class GPUs in v1, else 256)", parse=parse_int)
    max_num_batched_tokens: int | None = option(None, "vLLM --max-num-batched-tokens: tokens one step may process; "
                                                      "unset: the engine's (8192 in v0 and on H100-class GPUs in v1, "
                                                      "2048 on others in v1)", unit="tokens", parse=parse_int)
    max_model_len: int | None = option(None, "longest prompt + output a request may have; longer ones fail as vLLM "
                                             "rejects them; unset: the calibration's model limit; 0: none",
                                       unit="tokens", parse=parse_int)
    max_tokens: int | None = option(None, "max_tokens every request is sent with, unless the trace has a max_tokens "
                                          "column; unset: max_model_len - prompt, as vLLM; generation stops there", unit="tokens", parse=parse_int)
    oracle_lengths: bool = option(False, "let policies, caps and routers see each request's true remaining output "
                                         "(for analysis; a server knows only max_tokens)")
    kv_watermark: float = option(0.01, "fraction of KV blocks kept free when admitting a request (vLLM's watermark)",
                                 parse=parse_float)
    cuda_graphs: str = option("auto", "how the engine runs CUDA graphs: piecewise (every step pays the calibration's "
                                      "dynamic-k tax: what vLLM forces for dynamic speculation, #49548, and vLLM V1 "
                                      "up to 0.10's default), full, or auto (piecewise for a policy that varies k)",
                              choices=CUDA_GRAPHS)
    prefix_caching: str = option("auto", "reuse cached KV blocks of shared prompt prefixes from the trace's block "
                                         "hashes (auto: on in v1)", choices=PREFIX_CACHING)
    kv_blocks: int | None = option(None, "KV-cache blocks per replica (default: derived from the calibration's GPU "
                                         "memory minus weights)", unit="blocks", parse=parse_int)
    block_size: int = option(16, "tokens per KV-cache block (the KV memory is fixed: bigger blocks, fewer of them)",
                             unit="tokens", parse=parse_int)
    chunked_prefill: bool = option(False, "with --engine v0: mix decodes and prefill chunks in one step (decodes "
                                          "first, chunks fill the token budget; v1 always does)")
    spec_in_prefill_steps: bool = option(False, "with --engine v0: allow speculation in steps that carry prefill "
                                                "(off in SmartSpec's V0; v1 always does)", flag="--spec-in-prefill")
    max_k: int = option(7, "largest proposal length (lookahead slots) per request; a policy asking for more (fixed:9) "
                          "is refused", unit="tokens", parse=parse_int)
    style: str = option("draft", "draft model/EAGLE, prompt lookup (n-gram) or Medusa-style tree", choices=STYLES,
                        group="speculation")
    acceptance: str = option("mt-bench", "per-token acceptance: a rate in [0,1) or a preset ("
                             + ", ".join(PRESETS) + ")", group="speculation", metavar="RATE|PRESET")
    acceptance_spread: float | None = option(None, "Beta concentration of per-request acceptance around the mean "
                                                   "(0 = identical; default 20)", parse=parse_float,
                                             group="speculation")
    acceptance_mode: str = option("independent", "independent draws per request, one shared draw per step, or "
                                                 "per-position rates", choices=ACCEPTANCE_MODES, group="speculation")
    position_rates: tuple[float, ...] = option((), "comma-separated conditional acceptance per draft position "
                                                   "(per-position mode)", parse=parse_float_list, group="speculation",
                                               metavar="R1,R2,...")
    ngram_match_prob: float = option(0.9, "prompt lookup: chance a step finds an n-gram match", flag="--ngram-match",
                                     parse=parse_float, group="speculation")
    acceptance_trace: str | None = option(None, "replay measured acceptance exactly: an acceptance trace (JSONL, "
                                                "JSONL.gz, Parquet; docs/acceptance-traces.md); a request replays the "
                                                "record its acceptance_id column names, else a seeded draw assigns "
                                                "records", group="speculation", metavar="FILE")
    spans_field: str = option("spans", "which span list of the acceptance trace to replay (spans, eagle_spans, "
                                       "ngram_spans, ...)", group="speculation", metavar="NAME")
    acceptance_profile: str | None = option(None, "sample each request's acceptance from a fitted profile: a shipped "
                                                  "name (e.g. sharegpt-eagle) or a JSON made by fit-acceptance",
                                            group="speculation", metavar="NAME|PATH")
    slo_ms: dict[str, float] = option(help="SLO for request goodput (vLLM --goodput), e.g. ttft:200,tpot:50,e2el:5000",
                                      flag="--slo", unit="ms", parse=lambda text: parse_slo(text),
                                      default_factory=dict, group="output", metavar="METRIC:MS,...")
    record_steps: bool = option(True, "do not keep the per-step log (saves memory)", flag="--no-step-log",
                                invert=True, group="output")
    max_sim_time_s: float | None = option(None, "stop the clock here; unfinished requests are reported as failed",
                                          flag="--max-sim-time", unit="s", parse=parse_float, group="output")

    def validate(self) -> "SimConfig":
        """Raise ConfigError naming the first option whose value cannot work; return self."""
        def need(cond: bool, option: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"--{option}: {msg}")

        for option_name, (name, lo, hi) in INT_LIMITS.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL_INTS:
                continue
            need(is_int(value) and lo <= value <= hi, option_name, f"must be an integer in {lo}..{hi}, got {value!r}")
        need(self.max_concurrency is None or (is_int(self.max_concurrency) and 1 <= self.max_concurrency <= 1 << 24),
             "max-concurrency", f"must be an integer in 1..{1 << 24}, got {self.max_concurrency!r}")
        need(is_real(self.concurrency_ramp_up_s) and 0.0 <= self.concurrency_ramp_up_s <= MAX_CLOCK_S,
             "concurrency-ramp-up", f"must be a number of seconds in [0, {MAX_CLOCK_S:.0e}], got "
             f"{self.concurrency_ramp_up_s!r}")
        need(self.engine in ENGINES, "engine", f"must be one of {', '.join(ENGINES)}")
        need(self.prefix_caching in PREFIX_CACHING, "prefix-caching", f"must be one of {', '.join(PREFIX_CACHING)}")
        need(self.cuda_graphs in CUDA_GRAPHS, "cuda-graphs", f"must be one of {', '.join(CUDA_GRAPHS)}")
        need(is_real(self.kv_watermark) and 0.0 <= self.kv_watermark < 1.0, "kv-watermark",
             f"must be a fraction in [0, 1), got {self.kv_watermark!r}")
        need(self.kv_blocks is None or (is_int(self.kv_blocks) and 1 <= self.kv_blocks <= 1 << 40), "kv-blocks",
             f"must be an integer in 1..{1 << 40}, got {self.kv_blocks!r}")
        need(self.router in ROUTERS, "router", f"must be one of {', '.join(ROUTERS)}")
        need(self.style in STYLES, "style", f"must be one of {', '.join(STYLES)}")
        need(self.acceptance_mode in ACCEPTANCE_MODES, "acceptance-mode",
             f"must be one of {', '.join(ACCEPTANCE_MODES)}")
        need(self.acceptance_spread is None or (is_real(self.acceptance_spread) and self.acceptance_spread >= 0
                                                and math.isfinite(self.acceptance_spread)),
             "acceptance-spread", f"must be a finite number >= 0, got {self.acceptance_spread!r}")
        need(all(is_real(r) and 0.0 <= r <= 1.0 for r in self.position_rates), "position-rates",
             "rates must be in [0, 1]")
        need(is_real(self.ngram_match_prob) and 0.0 <= self.ngram_match_prob <= 1.0, "ngram-match",
             f"must be in [0, 1], got {self.ngram_match_prob!r}")
        need(not (self.acceptance_trace and self.acceptance_profile), "acceptance-profile",
             "give either --acceptance-trace or --acceptance-profile, not both")
        need(isinstance(self.spans_field, str) and self.spans_field.strip() != "", "spans-field",
             "must name a span list, e.g. spans or eagle_spans")
        need(isinstance(self.policy_calibration, str) and self.policy_calibration.strip() != "", "policy-calibration",
             "must be fitted, same, or a calibration name or path")
        need(is_real(self.step_time_noise) and 0.0 <= self.step_time_noise <= MAX_STEP_NOISE, "step-time-noise",
             f"must be a number in [0, {MAX_STEP_NOISE:g}], got {self.step_time_noise!r}")
        need(self.max_sim_time_s is None or (is_real(self.max_sim_time_s) and 0 < self.max_sim_time_s <= MAX_CLOCK_S),
             "max-sim-time", f"must be a number of seconds in (0, {MAX_CLOCK_S:.0e}], got {self.max_sim_time_s!r}")
        for key, value in self.slo_ms.items():
            need(key in ("ttft", "tpot", "e2el"), "slo", f"unknown metric {key!r} (ttft, tpot, e2el)")
            need(is_real(value) and 0 < value < math.inf, "slo", f"{key} must be a finite number > 0 ms, got {value!r}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def is_int(value: object) -> bool:
    """A whole number (bool excluded: True is no replica count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A real number (int or float, numpy's too; bool excluded); NaN compares False with every bound."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def parse_slo(text: str) -> dict[str, float]:
    """Parse `ttft:200,tpot:50` (milliseconds) into a dict; ConfigError names the bad item."""
    slo: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition(":")
        try:
            slo[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--slo: {item!r} is not metric:milliseconds") from None
        if not sep:
            raise ConfigError(f"--slo: {item!r} is not metric:milliseconds")
    return slo

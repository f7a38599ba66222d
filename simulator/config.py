"""Simulation configuration: one dataclass holding every engine option, with validation.

The CLI, the sweep runner and tests all build a `SimConfig`; `SimConfig.validate()` raises
`ConfigError` with a one-line message naming the offending option. Each field declares its
command-line option (simulator/options.py), so `simulate --help` and `sweep --help` are derived
from this file: defaults, choices, units and help are written once, here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from specdec_sim.costmodel import DEFAULT_CALIBRATION, available_calibrations
from specdec_sim.simulator.acceptance import PRESETS
from specdec_sim.simulator.options import option, parse_float, parse_float_list, parse_int

ROUTERS = ("round-robin", "least-tokens", "random")
STYLES = ("draft", "ngram", "tree")
ACCEPTANCE_MODES = ("independent", "batch", "per-position")


class ConfigError(ValueError):
    """An impossible or malformed simulation option."""


@dataclass
class SimConfig:
    """Every engine option of one simulation; each field is also a `simulate`/`sweep` option."""

    calibration: str = option(DEFAULT_CALIBRATION, "step-time calibration: a JSON path or a shipped name ("
                              + ", ".join(available_calibrations()) + ")", metavar="NAME|PATH")
    replicas: int = option(1, "model replicas behind the router", parse=parse_int)
    router: str = option("round-robin", "how arrivals are spread over replicas", choices=ROUTERS)
    max_num_seqs: int = option(256, "vLLM --max-num-seqs: requests in a replica's running batch", parse=parse_int)
    max_num_batched_tokens: int = option(8192, "vLLM --max-num-batched-tokens: tokens one step may process",
                                         unit="tokens", parse=parse_int)
    kv_blocks: int | None = option(None, "KV-cache blocks per replica (default: derived from the calibration's GPU "
                                         "memory minus weights)", unit="blocks", parse=parse_int)
    block_size: int = option(16, "tokens per KV-cache block", unit="tokens", parse=parse_int)
    chunked_prefill: bool = option(False, "mix decodes and prefill chunks in one step (vLLM V1-style: decodes first, "
                                          "chunks fill the token budget)")
    spec_in_prefill_steps: bool = option(False, "allow speculation in steps that carry prefill (default off, as "
                                                "SmartSpec V0)", flag="--spec-in-prefill")
    max_k: int = option(7, "largest proposal length (lookahead slots) per request", unit="tokens", parse=parse_int)
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
    slo_ms: dict[str, float] = option(help="SLO for request goodput (vLLM --goodput), e.g. ttft:200,tpot:50,e2el:5000",
                                      flag="--slo", unit="ms", parse=lambda text: parse_slo(text),
                                      default_factory=dict, group="output", metavar="METRIC:MS,...")
    record_steps: bool = option(True, "do not keep the per-step log (saves memory)", flag="--no-step-log",
                                invert=True, group="output")
    max_sim_time_s: float | None = option(None, "stop the clock here; unfinished requests are reported as failed",
                                          flag="--max-sim-time", unit="s", parse=parse_float, group="output")

    def validate(self) -> "SimConfig":
        def need(cond: bool, option: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"--{option}: {msg}")

        need(self.replicas >= 1, "replicas", "must be >= 1")
        need(self.router in ROUTERS, "router", f"must be one of {', '.join(ROUTERS)}")
        need(self.max_num_seqs >= 1, "max-num-seqs", "must be >= 1")
        need(self.max_num_batched_tokens >= 1, "max-num-batched-tokens", "must be >= 1")
        need(self.block_size >= 1, "block-size", "must be >= 1")
        need(self.kv_blocks is None or self.kv_blocks >= 1, "kv-blocks", "must be >= 1")
        need(0 <= self.max_k <= 64, "max-k", "must be in 0..64")
        need(self.style in STYLES, "style", f"must be one of {', '.join(STYLES)}")
        need(self.acceptance_mode in ACCEPTANCE_MODES, "acceptance-mode",
             f"must be one of {', '.join(ACCEPTANCE_MODES)}")
        need(self.acceptance_spread is None or self.acceptance_spread >= 0, "acceptance-spread", "must be >= 0")
        need(all(0.0 <= r <= 1.0 for r in self.position_rates), "position-rates", "rates must be in [0, 1]")
        need(0.0 <= self.ngram_match_prob <= 1.0, "ngram-match", "must be in [0, 1]")
        need(self.max_sim_time_s is None or self.max_sim_time_s > 0, "max-sim-time", "must be > 0")
        for key, value in self.slo_ms.items():
            need(key in ("ttft", "tpot", "e2el"), "slo", f"unknown metric {key!r} (ttft, tpot, e2el)")
            need(value > 0, "slo", f"{key} must be > 0 ms")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


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

"""Simulation configuration: one dataclass holding every engine option, with validation.

The CLI, the sweep runner and tests all build a `SimConfig`; `SimConfig.validate()` raises
`ConfigError` with a one-line message naming the offending option.
"""
from __future__ import annotations

from dataclasses import dataclass, field, asdict

ROUTERS = ("round-robin", "least-tokens", "random")
STYLES = ("draft", "ngram", "tree")
ACCEPTANCE_MODES = ("independent", "batch", "per-position")


class ConfigError(ValueError):
    """An impossible or malformed simulation option."""


@dataclass
class SimConfig:
    calibration: str = "llama3-8b-eagle-h100"  # shipped name or path to a calibration JSON
    replicas: int = 1
    router: str = "round-robin"
    max_num_seqs: int = 256  # vLLM --max-num-seqs: requests in the running batch
    max_num_batched_tokens: int = 8192  # vLLM --max-num-batched-tokens: tokens per step
    kv_blocks: int | None = None  # KV-cache blocks per replica; None = derived from the calibration's memory
    block_size: int = 16
    chunked_prefill: bool = False  # vLLM V1-style: decodes first, prefill chunks fill the token budget
    spec_in_prefill_steps: bool = False  # False = SmartSpec V0: no speculation in steps carrying prefill
    max_k: int = 7  # lookahead cap: largest proposal length any policy may use
    style: str = "draft"  # draft (draft model / EAGLE), ngram (prompt lookup) or tree (Medusa-style)
    acceptance: str = "mt-bench"  # preset name (see simulator.acceptance.PRESETS) or a number in (0, 1)
    acceptance_spread: float | None = None  # Beta concentration of per-request alpha; None = preset's; 0 = all equal
    acceptance_mode: str = "independent"  # independent per request, batch (one draw per step) or per-position
    position_rates: tuple[float, ...] = ()  # per-position conditional acceptance rates (per-position mode)
    ngram_match_prob: float = 0.9  # prompt lookup: probability a decode step finds an n-gram match
    slo_ms: dict[str, float] = field(default_factory=dict)  # e.g. {"ttft": 200, "tpot": 50}
    record_steps: bool = True  # keep the per-step log (memory grows with steps)
    max_sim_time_s: float | None = None  # stop the clock here; unfinished requests are reported

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

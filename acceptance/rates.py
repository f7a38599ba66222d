"""Acceptance-length maths and the published presets: the one copy every package uses.

A preset names a dataset and a published mean acceptance length (AL, bonus token included) at a
known proposal length k; the per-token rate alpha is the i.i.d. value that reproduces it,
(1 - alpha^(k+1)) / (1 - alpha) = AL (Leviathan et al. 2023). Each preset's source is listed in
`acceptance/SOURCE.md`. `expected_tokens` is that formula, `alpha_from_acceptance_length` its
inverse, and `best_uniform_k` the goodput-best uniform proposal length given any step-time function
(policies price with a `CostModel`, the calibration builder with the one it is fitting).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

DEFAULT_SPREAD = 20.0


def expected_tokens(alpha: float, k: int) -> float:
    """Expected tokens a step emits for one request proposing k under i.i.d. acceptance alpha (bonus included)."""
    if k <= 0:
        return 1.0
    if alpha >= 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def alpha_from_acceptance_length(acceptance_length: float, k: int) -> float:
    """Invert AL = (1 - a^(k+1)) / (1 - a) for a by bisection (AL clipped to [1, k+1]; 60 halvings reach
    double precision)."""
    target = min(max(acceptance_length, 1.0), k + 1.0)
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        value = (1 - mid ** (k + 1)) / (1 - mid) if mid < 1 else k + 1.0
        lo, hi = (mid, hi) if value < target else (lo, mid)
    return (lo + hi) / 2


def best_uniform_k(step_time_s: Callable[[int], float], alpha: float, batch_size: int, ks: Iterable[int],
                   tokens: Callable[[float, int], float] = expected_tokens) -> int:
    """argmax over k in `ks` of batch_size * tokens(alpha, k) / step_time_s(k): the goodput-best uniform
    proposal length of a batch of identical requests (ties go to the smaller k)."""
    ks = sorted(set(ks))
    values = {k: batch_size * tokens(alpha, k) / step_time_s(k) for k in ks}
    return max(ks, key=lambda k: (values[k], -k))


@dataclass(frozen=True)
class AcceptancePreset:
    name: str
    acceptance_length: float  # published mean tokens per step incl. bonus
    k: int  # proposal length it was measured at
    source_id: str
    description: str
    position_rates: tuple[float, ...] = field(default=())  # published unconditional per-position rates

    @property
    def alpha(self) -> float:
        return alpha_from_acceptance_length(self.acceptance_length, self.k)

    @property
    def conditional_position_rates(self) -> tuple[float, ...]:
        """P(accept position i | positions < i accepted), from the unconditional rates."""
        rates, prev = [], 1.0
        for r in self.position_rates:
            rates.append(min(1.0, r / prev) if prev > 0 else 0.0)
            prev = r
        return tuple(rates)


PRESETS: dict[str, AcceptancePreset] = {p.name: p for p in (
    AcceptancePreset("mt-bench", 2.60, 3, "vllm_pr32030",
                     "Llama-3.1-8B-Instruct + EAGLE-3, MT-bench, vLLM V1", (0.73, 0.52, 0.35)),
    AcceptancePreset("mt-bench-k7", 3.53, 7, "vllm_issue26191", "Llama-3.1-8B-Instruct + EAGLE-3, MT-bench, k=7"),
    AcceptancePreset("mt-bench-qwen3", 2.26, 3, "vllm_pr32030", "Qwen3-8B + EAGLE-3, MT-bench",
                     (0.65, 0.40, 0.20)),
    AcceptancePreset("mt-bench-eagle1", 1.89, 2, "vllm_pr16035", "Llama-3-8B-Instruct + EAGLE-1, MT-bench, k=2"),
    AcceptancePreset("humaneval", 4.573, 8, "speculators_issue1135", "Llama-3.2-1B + DSpark drafter, HumanEval"),
    AcceptancePreset("math", 4.436, 8, "speculators_issue1135", "Llama-3.2-1B + DSpark drafter, math reasoning"),
    AcceptancePreset("tool-call", 3.462, 8, "speculators_issue1135", "Llama-3.2-1B + DSpark drafter, tool calls"),
    AcceptancePreset("question", 2.646, 8, "speculators_issue1135", "Llama-3.2-1B + DSpark drafter, questions"),
    AcceptancePreset("writing", 2.636, 8, "speculators_issue1135", "Llama-3.2-1B + DSpark drafter, writing"),
    AcceptancePreset("code-edit-ngram", 4.59, 5, "vllm_pr24344", "Llama-3.1-8B n-gram prompt lookup, code edits",
                     (0.81, 0.74, 0.70, 0.68, 0.66)),
    AcceptancePreset("code-mtp", 3.45, 3, "ik_llama_pr2156", "Qwen3.6-27B MTP head, code"),
)}


class AcceptanceError(ValueError):
    """An --acceptance value that is neither a preset nor a rate in (0, 1)."""


def position_tokens(rates: Sequence[float], k: int) -> float:
    """Tokens a request emits in a step proposing k, from unconditional per-position acceptance rates (vLLM's
    per-position acceptance: accepted at position i over drafts): 1 + the first k rates. ValueError when k is
    beyond the rates given (no extrapolation)."""
    if k > len(rates):
        raise ValueError(f"k {k} is beyond the {len(rates)} per-position rates given")
    return 1.0 + float(sum(rates[:max(0, k)]))


def resolve_mean_alpha(acceptance: str | float) -> float:
    """A preset name or a number in (0, 1) -> mean per-token acceptance rate."""
    if isinstance(acceptance, (int, float)):
        value = float(acceptance)
    elif acceptance in PRESETS:
        return PRESETS[acceptance].alpha
    else:
        try:
            value = float(acceptance)
        except ValueError:
            raise AcceptanceError(f"--acceptance: {acceptance!r} is neither a number in (0, 1) nor a preset "
                                  f"({', '.join(PRESETS)})") from None
    if not 0.0 <= value < 1.0:
        raise AcceptanceError(f"--acceptance: {value} must be in [0, 1)")
    return value


def preset_position_rates(acceptance: str | float) -> tuple[float, ...]:
    preset = PRESETS.get(acceptance) if isinstance(acceptance, str) else None
    return preset.conditional_position_rates if preset else ()


__all__ = ["DEFAULT_SPREAD", "expected_tokens", "alpha_from_acceptance_length", "best_uniform_k", "position_tokens",
           "AcceptancePreset", "PRESETS", "AcceptanceError", "resolve_mean_alpha", "preset_position_rates"]

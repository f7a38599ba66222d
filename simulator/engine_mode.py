"""Which vLLM engine a run models, and the limits that follow from it: pure, no SimPy.

`--engine v1` (the default: the shipped measured calibrations are vLLM V1 measurements) is V1's
unified scheduler: running requests' decodes and their drafts first, prefill chunks fill the token
budget, speculation in mixed steps, prefix caching on. `--engine v0` is SmartSpec's V0 engine: a
step with prefill carries only prefill and does not speculate (`--chunked-prefill` and
`--spec-in-prefill` refine it as before). Unset limits take that engine's defaults:

* V1 (`vllm serve`, vllm/engine/arg_utils.py `get_batch_defaults`): max_num_batched_tokens 8192 and
  max_num_seqs 1024 on GPUs with >= 70 GiB that are not A100s (H100, H200), else 2048 and 256;
* V0: max_num_seqs 256 and a token budget of 8192 (this simulator's long-standing default).

The admission watermark (`--kv-watermark`, vLLM's 1 % of blocks) and `max_model_len` (the
calibration's model limit unless given) apply in both.
"""
from __future__ import annotations

from dataclasses import dataclass

ENGINES = ("auto", "v1", "v0")
V0_LIMITS = (256, 8192)  # max_num_seqs, max_num_batched_tokens
V1_LARGE_GPU = (1024, 8192)
V1_OTHER_GPU = (256, 2048)
LARGE_GPU_GIB = 70.0


@dataclass(frozen=True)
class EngineLimits:
    """The scheduling limits and modes one replica runs with, after engine defaults are applied."""

    engine: str
    max_num_seqs: int
    max_num_batched_tokens: int
    chunked_prefill: bool
    spec_in_prefill_steps: bool
    prefix_caching: bool
    watermark: float
    max_model_len: int | None


def per_gpu_memory_gib(cal) -> float:
    """GPU memory of one device of the calibration (its memory spec sums a TP group's GPUs)."""
    return cal.memory.gpu_memory_gib / max(1, cal.tensor_parallel)


def v1_defaults(cal) -> tuple[int, int]:
    """V1's `vllm serve` defaults for the calibration's GPU: (max_num_seqs, max_num_batched_tokens)."""
    large = per_gpu_memory_gib(cal) >= LARGE_GPU_GIB and "a100" not in (cal.device or "").lower()
    return V1_LARGE_GPU if large else V1_OTHER_GPU


def engine_of(config, cal) -> str:
    """The engine a run models: --engine, or with `auto` the engine the calibration describes (its `engine`)."""
    return cal.engine if config.engine == "auto" else config.engine


def resolve_limits(config, cal) -> EngineLimits:
    """The limits of `config` (a SimConfig) on calibration `cal`, engine defaults filled in."""
    engine = engine_of(config, cal)
    v1 = engine == "v1"
    seqs, tokens = v1_defaults(cal) if v1 else V0_LIMITS
    model_len = config.max_model_len if config.max_model_len is not None else (cal.max_model_len or None)
    caching = v1 if config.prefix_caching == "auto" else config.prefix_caching == "on"
    return EngineLimits(
        engine=engine,
        max_num_seqs=config.max_num_seqs if config.max_num_seqs is not None else seqs,
        max_num_batched_tokens=config.max_num_batched_tokens if config.max_num_batched_tokens is not None else tokens,
        chunked_prefill=v1 or config.chunked_prefill,
        spec_in_prefill_steps=v1 or config.spec_in_prefill_steps,
        prefix_caching=caching,
        watermark=config.kv_watermark,
        max_model_len=model_len or None)

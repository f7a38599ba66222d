"""Timing harness: one forward pass of a given shape on top of a prefilled KV cache.

Before the timed forwards, a KV cache (`transformers.DynamicCache` whose layers write into a
preallocated buffer, like a serving engine's KV blocks, instead of concatenating) holding `context`
tokens per sequence is filled with random keys and values (the same tensors a prefill would leave;
their creation is not timed). Each repeat runs `batch x query` new tokens through the model, then
the cache is cut back to `context` tokens outside the timed region. GPU timing uses CUDA events and
`torch.cuda.synchronize`; CPU timing uses `time.perf_counter`, or `time.thread_time` (`clock="thread"`,
single-threaded torch only) on a shared machine where other processes steal the core.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass

import numpy as np
import torch

# Dense (no sparsity) peaks: memory bandwidth GB/s, tensor TFLOP/s for bf16/fp16, and fp32 TFLOP/s.
# From NVIDIA's data sheets; matched against torch.cuda.get_device_name() in order.
KNOWN_PEAKS: list[tuple[str, float, float, float]] = [
    ("H200", 4800.0, 989.0, 67.0),
    ("H100 PCIe", 2000.0, 756.0, 51.0),
    ("H100 NVL", 3900.0, 835.0, 60.0),
    ("H100", 3350.0, 989.0, 67.0),
    ("A100-SXM4-80GB", 2039.0, 312.0, 19.5),
    ("A100 80GB PCIe", 1935.0, 312.0, 19.5),
    ("A100", 1555.0, 312.0, 19.5),
    ("L40S", 864.0, 362.0, 91.6),
    ("L40", 864.0, 181.0, 90.5),
    ("L4", 300.0, 121.0, 30.3),
    ("A10G", 600.0, 70.0, 31.2),
    ("A10", 600.0, 125.0, 31.2),
]


@dataclass(frozen=True)
class DeviceInfo:
    """What ran the measurements, with its peaks (None where unknown, e.g. CPUs)."""

    device: str
    name: str
    memory_gib: float
    peak_bandwidth_gbs: float | None
    peak_tflops: float | None
    torch_version: str
    cuda_version: str
    transformers_version: str


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_memory_gib() -> float:
    try:
        import os
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 0.0


def device_info(device: str, dtype: str) -> DeviceInfo:
    import transformers

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        name, mem = props.name, props.total_memory / 2**30
        peak = next((p for p in KNOWN_PEAKS if p[0].lower() in name.lower()), None)
        bw = peak[1] if peak else None
        tf = (peak[3] if dtype == "fp32" else peak[2]) if peak else None
    else:
        name = f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
        mem, bw, tf = cpu_memory_gib(), None, None
    return DeviceInfo(device=device, name=name, memory_gib=round(mem, 2), peak_bandwidth_gbs=bw, peak_tflops=tf,
                      torch_version=torch.__version__, cuda_version=torch.version.cuda or "none",
                      transformers_version=transformers.__version__)


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one shape in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int


def timing_of(samples_ms: list[float]) -> Timing:
    a = np.asarray(samples_ms, dtype=float)
    return Timing(float(np.median(a)), float(np.percentile(a, 10)), float(np.percentile(a, 90)), len(a))


def _preallocated_layer_class():
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """A DynamicLayer over a buffer sized for context + new tokens: `update` writes the new keys and
        values in place and returns views, instead of DynamicLayer's torch.cat that copies the whole
        cache on every forward (a cost paged-attention engines such as vLLM do not pay)."""

        def __init__(self, keys, values, length: int):
            super().__init__()
            self.kbuf, self.vbuf, self.length = keys, values, length
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True
            self._views()

        def _views(self) -> None:
            self.keys, self.values = self.kbuf[:, :, :self.length], self.vbuf[:, :, :self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            end = self.length + key_states.shape[-2]
            if end > self.kbuf.shape[-2]:
                raise ValueError(f"preallocated KV cache holds {self.kbuf.shape[-2]} tokens, asked for {end}")
            self.kbuf[:, :, self.length:end].copy_(key_states)
            self.vbuf[:, :, self.length:end].copy_(value_states)
            self.length = end
            self._views()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def crop(self, tokens_to_remove: int) -> None:
            self.length = max(0, self.length - abs(tokens_to_remove))
            self._views()

    return PreallocatedLayer


def make_cache(model, batch: int, context: int, device: str, dtype, new_tokens: int = 0):
    """A DynamicCache holding `context` random tokens per sequence in every layer, with room for
    `new_tokens` more written in place (not timed). Without room it falls back to DynamicLayer's
    concatenation, which copies the cache on every forward."""
    from transformers import DynamicCache

    cfg = model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    cache = DynamicCache(config=cfg)
    gen = torch.Generator(device=device).manual_seed(context)
    k = torch.randn(batch, kv_heads, context, head_dim, device=device, dtype=dtype, generator=gen)
    v = torch.randn(batch, kv_heads, context, head_dim, device=device, dtype=dtype, generator=gen)
    if new_tokens <= 0:
        for layer in range(cfg.num_hidden_layers):  # own copies per layer, so memory use is real
            cache.update(k.clone(), v.clone(), layer)
        return cache
    layer_cls = _preallocated_layer_class()
    layers = []
    for _ in range(cfg.num_hidden_layers):
        kbuf = torch.empty(batch, kv_heads, context + new_tokens, head_dim, device=device, dtype=dtype)
        vbuf = torch.empty_like(kbuf)
        kbuf[:, :, :context].copy_(k)
        vbuf[:, :, :context].copy_(v)
        layers.append(layer_cls(kbuf, vbuf, context))
    cache.layers = layers
    return cache


def trim_cache(cache, context: int) -> None:
    """Drop the tokens a timed forward appended, so the next repeat sees `context` tokens again."""
    extra = cache.get_seq_length() - context
    if extra > 0:
        cache.crop(-extra)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_forward(model, batch: int, query: int, context: int, device: str, warmup: int = 1,
                 repeats: int = 3, logits_to_keep: int = 0, seed: int = 0, clock: str = "wall") -> Timing:
    """Median/p10/p90 latency of model(batch x query new tokens) over a `context`-token KV cache."""
    dtype = next(model.parameters()).dtype
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, query), generator=gen).to(device)
    positions = torch.arange(context, context + query, device=device).unsqueeze(0).expand(batch, -1)
    cache = make_cache(model, batch, context, device, dtype, new_tokens=query)
    samples: list[float] = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            trim_cache(cache, context)
            _sync(device)
            ms = _timed_call(lambda: model(input_ids=ids, past_key_values=cache, position_ids=positions,
                                           use_cache=True, logits_to_keep=logits_to_keep), device, clock)
            if i >= warmup:
                samples.append(ms)
    return timing_of(samples)


def cpu_clock(clock: str):
    """perf_counter (wall time) or thread_time (CPU time of this thread: immune to other processes
    taking the core, exact for latency only when torch runs single-threaded)."""
    return time.thread_time if clock == "thread" else time.perf_counter


def _timed_call(fn, device: str, clock: str = "wall") -> float:
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return float(start.elapsed_time(end))
    now = cpu_clock(clock)
    t0 = now()
    fn()
    return (now() - t0) * 1000.0


def is_oom(exc: BaseException) -> bool:
    """True for CUDA/CPU out-of-memory errors (the shape does not fit), False for real bugs."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in str(exc).lower())


def free_memory(device: str) -> None:
    import gc
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()

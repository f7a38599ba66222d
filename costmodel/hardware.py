"""GPU facts, and the roofline that turns them and a model's shape (costmodel/architectures.py) into coefficients.

A forward pass of a decoder is priced per phase, as a roofline with fitted efficiencies:

* linear layers (QKV, output projection, gated MLP, LM head): streaming the weights costs
  W / (HBM bandwidth * memory efficiency) whatever the batch; computing costs 2 * params * N /
  (peak dense bf16 * compute efficiency) for N batched tokens. Time is flat until the compute line
  overtakes the memory line and then rises with N: the knee. Measured GEMMs (Vidur's H100/A100
  per-layer tables) bend before the pure roofline crossover N*, so the knee sits at `knee * N*`
  and the slope after it is the compute slope (a hinge: `ForwardCoefficients.after_knee_ms`);
* decode attention reads every context token's K and V once: KV bytes / (bandwidth * efficiency)
  per KV token;
* prefill attention computes 4 * layers * heads * head_dim FLOPs per (query, key) pair, summed by
  `StepShape.prefill_attention_tokens2`;
* tensor parallelism divides weights, FLOPs, heads and KV by the TP degree and adds two all-reduces
  per layer: a latency each and 2 (tp - 1) / tp * hidden * 2 bytes per token over the link.

`roofline_forward(arch, gpu, efficiency, tp)` returns `ForwardCoefficients`, so a roofline-built
calibration is the same JSON, checked and priced by the same code as a fitted or published one.
Pure: no I/O. GPU numbers are vendor datasheet figures (dense, without sparsity).
"""
from __future__ import annotations

from dataclasses import dataclass

from specdec_sim.costmodel.architectures import BF16_BYTES, Architecture
from specdec_sim.costmodel.coefficients import ForwardCoefficients


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model: dense bf16 tensor peak, HBM bandwidth and size, and the TP link (per GPU, one way)."""

    key: str
    name: str
    peak_tflops: float
    hbm_tb_s: float
    memory_gib: float
    link_gb_s: float
    source: str


_NVIDIA = "NVIDIA datasheet"
GPUS: dict[str, GpuSpec] = {g.key: g for g in (
    GpuSpec("h100-sxm", "NVIDIA H100 SXM5 80GB", 989.4, 3.35, 80.0, 450.0,
            f"{_NVIDIA} (H100 Tensor Core GPU, 2023): 1,979 TFLOPS bf16 with sparsity, 3.35 TB/s HBM3, NVLink 900 GB/s"),
    GpuSpec("h100-pcie", "NVIDIA H100 PCIe 80GB", 756.0, 2.0, 80.0, 64.0,
            f"{_NVIDIA} (H100 Tensor Core GPU, 2023): 1,513 TFLOPS bf16 with sparsity, 2.0 TB/s HBM2e, PCIe Gen5 128 GB/s"),
    GpuSpec("h200", "NVIDIA H200 SXM 141GB", 989.4, 4.8, 141.0, 450.0,
            f"{_NVIDIA} (H200 Tensor Core GPU, 2024): 1,979 TFLOPS bf16 with sparsity, 4.8 TB/s HBM3e, NVLink 900 GB/s"),
    GpuSpec("a100-80gb", "NVIDIA A100 SXM4 80GB", 312.0, 2.039, 80.0, 300.0,
            f"{_NVIDIA} (A100 Tensor Core GPU, 2021): 312 TFLOPS bf16, 2,039 GB/s HBM2e, NVLink 600 GB/s"),
    GpuSpec("a100-40gb", "NVIDIA A100 SXM4 40GB", 312.0, 1.555, 40.0, 300.0,
            f"{_NVIDIA} (A100 Tensor Core GPU, 2021): 312 TFLOPS bf16, 1,555 GB/s HBM2, NVLink 600 GB/s"),
    GpuSpec("l40s", "NVIDIA L40S 48GB", 362.05, 0.864, 48.0, 32.0,
            f"{_NVIDIA} (L40S, 2023): 733 TFLOPS bf16 with sparsity, 864 GB/s GDDR6, PCIe Gen4 64 GB/s"),
    GpuSpec("a10g", "NVIDIA A10G 24GB", 70.0, 0.6, 24.0, 16.0,
            "NVIDIA A10 datasheet (125 TFLOPS bf16 with sparsity, 600 GB/s GDDR6) scaled to AWS's A10G clocks: "
            "approximate"),
)}


@dataclass(frozen=True)
class Efficiency:
    """Achieved fractions of a GPU's roofline, and fixed costs the roofline does not see (fitted)."""

    memory: float = 0.8  # of HBM bandwidth, streaming weights and KV
    compute: float = 0.6  # of dense bf16 peak, in GEMMs past the knee
    knee: float = 0.5  # knee position as a fraction of the roofline crossover N*
    forward_fixed_ms: float = 0.0  # per forward: kernel launches, embedding, norms, sampling prep
    allreduce_latency_ms: float = 0.0  # per all-reduce under TP (two per layer)
    allreduce_efficiency: float = 0.7  # of the link bandwidth, for the bytes term


@dataclass(frozen=True)
class RooflineTerms:
    """The roofline of one forward on one GPU (ms), before it becomes ForwardCoefficients."""

    weights_ms: float  # streaming the linear weights once
    compute_ms_per_token: float
    kv_ms_per_token: float
    prefill_attention_ms_per_pair: float
    allreduce_fixed_ms: float
    allreduce_ms_per_token: float

    @property
    def crossover_tokens(self) -> float:
        return self.weights_ms / self.compute_ms_per_token


def roofline_terms(arch: Architecture, gpu: GpuSpec, eff: Efficiency, tp: int = 1,
                   dtype_bytes: int = BF16_BYTES) -> RooflineTerms:
    """Per-GPU roofline of `arch` at tensor-parallel degree `tp` (see the module docstring)."""
    if tp < 1:
        raise ValueError(f"tensor parallel degree must be >= 1, not {tp}")
    bandwidth = gpu.hbm_tb_s * 1e12 * eff.memory  # bytes/s
    flops = gpu.peak_tflops * 1e12 * eff.compute  # FLOP/s
    params = arch.linear_params() / tp
    ar_fixed = ar_token = 0.0
    if tp > 1:
        collectives = 2 * arch.layers
        link = gpu.link_gb_s * 1e9 * eff.allreduce_efficiency
        ar_fixed = collectives * eff.allreduce_latency_ms
        ar_token = collectives * 2 * (tp - 1) / tp * arch.hidden * dtype_bytes / link * 1e3
    return RooflineTerms(
        weights_ms=params * dtype_bytes / bandwidth * 1e3,
        compute_ms_per_token=2 * params / flops * 1e3,
        kv_ms_per_token=arch.kv_bytes_per_token(dtype_bytes) / tp / bandwidth * 1e3,
        prefill_attention_ms_per_pair=arch.attention_flops_per_pair() / tp / flops * 1e3,
        allreduce_fixed_ms=ar_fixed, allreduce_ms_per_token=ar_token)


def coefficients_from_terms(terms: RooflineTerms, eff: Efficiency) -> ForwardCoefficients:
    """The hinge form of a roofline: flat at the weights' time until the knee, the compute slope after."""
    return ForwardCoefficients(
        fixed_ms=terms.weights_ms + eff.forward_fixed_ms + terms.allreduce_fixed_ms,
        per_kv_token_ms=terms.kv_ms_per_token,
        per_batched_token_ms=terms.allreduce_ms_per_token,
        knee_tokens=eff.knee * terms.crossover_tokens,
        after_knee_ms=terms.compute_ms_per_token,
        prefill_attention_ms=terms.prefill_attention_ms_per_pair)


def roofline_forward(arch: Architecture, gpu: GpuSpec, eff: Efficiency, tp: int = 1) -> ForwardCoefficients:
    """ForwardCoefficients of one forward of `arch` on `tp` GPUs of kind `gpu` (milliseconds)."""
    return coefficients_from_terms(roofline_terms(arch, gpu, eff, tp), eff)


def lookup_gpu(key: str) -> GpuSpec:
    try:
        return GPUS[key]
    except KeyError:
        raise KeyError(f"unknown GPU {key!r} (known: {', '.join(GPUS)})") from None

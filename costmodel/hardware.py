"""GPU and model-architecture facts, and the roofline that turns them into forward-pass coefficients.

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
Pure: no I/O. GPU numbers are vendor datasheet figures (dense, without sparsity); architecture
numbers are the models' `config.json` values (model cards).
"""
from __future__ import annotations

from dataclasses import dataclass

from specdec_sim.costmodel.coefficients import ForwardCoefficients

BF16_BYTES = 2


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
class Architecture:
    """A decoder's shape (config.json). EAGLE heads: one decoder layer whose QKV input may be the
    concatenation of `qkv_input_mult` hidden vectors, an input `fc` of `fc_in_mult` x hidden -> hidden,
    and an LM head over `lm_head_vocab` tokens (EAGLE-3's reduced draft vocabulary)."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_position: int
    tie_embeddings: bool = False
    qkv_input_mult: int = 1
    fc_in_mult: int = 0
    lm_head_vocab: int | None = None
    source: str = ""

    def layer_linear_params(self) -> int:
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        qkv = self.qkv_input_mult * h * (q + 2 * kv)
        return qkv + q * h + 3 * h * self.intermediate

    def lm_head_params(self) -> int:
        return (self.lm_head_vocab or self.vocab) * self.hidden

    def linear_params(self) -> int:
        """Parameters every token multiplies through: the layers, the input fc (EAGLE) and the LM head."""
        fc = self.fc_in_mult * self.hidden * self.hidden
        return self.layers * self.layer_linear_params() + fc + self.lm_head_params()

    def weight_bytes(self, dtype_bytes: int = BF16_BYTES) -> int:
        """All weights held on the GPUs (embedding included unless tied to the LM head)."""
        embedding = 0 if self.tie_embeddings else self.vocab * self.hidden
        return (self.linear_params() + embedding) * dtype_bytes

    def kv_bytes_per_token(self, dtype_bytes: int = BF16_BYTES) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def attention_flops_per_pair(self) -> int:
        """FLOPs per (query, key) pair: QK^T and PV, 2 FLOPs per multiply-add, every layer and head."""
        return 4 * self.layers * self.heads * self.head_dim


def _llama(name: str, hidden: int, inter: int, layers: int, heads: int, kv: int, hd: int, vocab: int, pos: int,
           tie: bool = False, **extra) -> Architecture:
    return Architecture(name, hidden, inter, layers, heads, kv, hd, vocab, pos, tie,
                        source=extra.pop("source", f"{name} config.json (model card)"), **extra)


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    _llama("llama3.1-8b", 4096, 14336, 32, 32, 8, 128, 128256, 131072),
    _llama("llama3-8b", 4096, 14336, 32, 32, 8, 128, 128256, 8192),
    _llama("llama3.1-70b", 8192, 28672, 80, 64, 8, 128, 128256, 131072),
    _llama("llama3-70b", 8192, 28672, 80, 64, 8, 128, 128256, 8192),
    _llama("llama3.2-1b", 2048, 8192, 16, 32, 8, 64, 128256, 131072, tie=True),
    _llama("llama3.2-3b", 3072, 8192, 28, 24, 8, 128, 128256, 131072, tie=True),
    _llama("llama2-7b", 4096, 11008, 32, 32, 32, 128, 32000, 4096),
    _llama("llama2-70b", 8192, 28672, 80, 64, 8, 128, 32000, 4096),
    _llama("vicuna-7b", 4096, 11008, 32, 32, 32, 128, 32000, 4096),
    _llama("llama-160m", 768, 3072, 12, 12, 12, 64, 32000, 2048),
    _llama("llama-68m", 768, 3072, 2, 12, 12, 64, 32000, 2048),
    _llama("codellama-34b", 8192, 22016, 48, 64, 8, 128, 32000, 16384),
    _llama("qwen2.5-7b", 3584, 18944, 28, 28, 4, 128, 152064, 131072),
    _llama("qwen2.5-0.5b", 896, 4864, 24, 14, 2, 64, 151936, 32768, tie=True),
    _llama("mistral-7b", 4096, 14336, 32, 32, 8, 128, 32000, 32768),
    # EAGLE heads: one decoder layer of the target's width (HF yuhuili/EAGLE-* configs)
    _llama("eagle-llama3.1-8b", 4096, 14336, 1, 32, 8, 128, 128256, 131072, fc_in_mult=2,
           source="yuhuili/EAGLE-LLaMA3.1-Instruct-8B: one Llama layer, fc 2h->h, the target's LM head"),
    _llama("eagle3-llama3.1-8b", 4096, 14336, 1, 32, 8, 128, 128256, 131072, qkv_input_mult=2, fc_in_mult=3,
           lm_head_vocab=32000,
           source="yuhuili/EAGLE3-LLaMA3.1-Instruct-8B: one layer on [embedding; hidden] (QKV input 2h), fc 3h->h "
                  "over three target layers' states, draft vocabulary 32,000"),
    _llama("eagle-llama3-70b", 8192, 28672, 1, 64, 8, 128, 128256, 8192, fc_in_mult=2,
           source="yuhuili/EAGLE-LLaMA3-Instruct-70B: one Llama-70B layer, fc 2h->h, the target's LM head"),
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


def lookup_architecture(key: str) -> Architecture:
    try:
        return ARCHITECTURES[key]
    except KeyError:
        raise KeyError(f"unknown architecture {key!r} (known: {', '.join(ARCHITECTURES)})") from None

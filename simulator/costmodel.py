"""Step-time cost model: pure functions from a batch shape to draft, verify and overhead seconds.

A calibration (a JSON file, see `simulator/calibrations/`) holds fitted coefficients in
milliseconds for one target/draft pair on one GPU, plus the memory facts needed to size the
KV cache and the provenance of the numbers. This module has no SimPy and no I/O besides
`load_calibration`; policies call `CostModel.step_time_s` to price candidate proposal lengths.

Forward-pass form (target, and draft when drafting runs the draft model step by step):

    t_ms = fixed + per_kv_token * N_kv + per_batched_token * N_batched + per_seq * B
           + spec_on * [speculating] + after_knee * max(0, N_batched - knee_tokens)
           + prefill_attention * sum_i(chunk_i * (context_i + chunk_i / 2))

With `after_knee = 0` and `prefill_attention = 0` this is the TurboSpec V1 linear model
(smartspec-reference.md section 1.4); the hinge term captures the compute knee where latency
stops being flat in batched tokens, which is what `profile-gpu` fits on real hardware.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import Sequence

CALIBRATION_DIR = Path(__file__).parent / "calibrations"
DEFAULT_CALIBRATION = "llama3-8b-eagle-h100"
OOM_STEP_TIME_S = 10_000.0  # SmartSpec's out-of-memory sentinel, in seconds


class CalibrationError(ValueError):
    """A calibration file or name that cannot be used."""


@dataclass(slots=True)
class StepShape:
    """What one engine step computes, summed over the requests it carries."""

    num_decode: int = 0  # decoding requests (B)
    num_proposing: int = 0  # decoding requests with k > 0 (m)
    verify_tokens: int = 0  # sum over decoding requests of (k_r + 1)
    prefill_tokens: int = 0  # prompt tokens (or prefill-chunk tokens) in the step
    num_prefill: int = 0  # requests carrying a prefill chunk
    kv_tokens: int = 0  # context tokens already in the KV cache that the step reads
    max_k: int = 0  # largest proposal length in the step
    draft_batch_sizes: tuple[int, ...] = ()  # requests drafting at sequential draft step j = 1..max_k
    prefill_attention_tokens2: float = 0.0  # sum_i chunk_i * (context_i + chunk_i / 2)

    @property
    def num_seqs(self) -> int:
        return self.num_decode + self.num_prefill


@dataclass(frozen=True)
class ForwardCoefficients:
    """Latency of one forward pass in milliseconds (see the module docstring)."""

    fixed_ms: float
    per_kv_token_ms: float = 0.0
    per_batched_token_ms: float = 0.0
    per_seq_ms: float = 0.0
    spec_on_ms: float = 0.0
    knee_tokens: float = 0.0
    after_knee_ms: float = 0.0
    prefill_attention_ms: float = 0.0

    def forward_ms(self, batched_tokens: float, kv_tokens: float, num_seqs: int,
                   speculating: bool = False, prefill_attention_tokens2: float = 0.0) -> float:
        t = (self.fixed_ms + self.per_kv_token_ms * kv_tokens
             + self.per_batched_token_ms * batched_tokens + self.per_seq_ms * num_seqs)
        if speculating:
            t += self.spec_on_ms
        if self.after_knee_ms and batched_tokens > self.knee_tokens:
            t += self.after_knee_ms * (batched_tokens - self.knee_tokens)
        if self.prefill_attention_ms:
            t += self.prefill_attention_ms * prefill_attention_tokens2
        return t


@dataclass(frozen=True)
class DraftCost:
    """How drafting time grows with the proposal length.

    kind = "sequential": k draft-model forwards, step j over the requests still drafting
    (`forward` gives one draft forward). kind = "linear": TurboSpec's closed form
    fixed + per_kv_token*N_kv + per_scheduled_token*N_sched + per_k*k + per_seq*B.
    kind = "fraction": a fixed share of the target time (prompt lookup / n-gram, 4 %).
    """

    kind: str = "sequential"
    forward: ForwardCoefficients | None = None
    fixed_ms: float = 0.0
    per_kv_token_ms: float = 0.0
    per_scheduled_token_ms: float = 0.0
    per_k_ms: float = 0.0
    per_seq_ms: float = 0.0
    fraction_of_target: float = 0.0


@dataclass(frozen=True)
class MemorySpec:
    """Facts that size the KV cache: blocks = (GPU memory * utilisation - weights - reserve) / block bytes."""

    gpu_memory_gib: float = 80.0
    gpu_memory_utilization: float = 0.9
    weights_gib: float = 16.0
    activation_reserve_gib: float = 1.0
    kv_bytes_per_token: int = 131072  # target + draft KV bytes per token (all layers, all GPUs)
    block_size: int = 16

    def num_kv_blocks(self) -> int:
        free_gib = self.gpu_memory_gib * self.gpu_memory_utilization - self.weights_gib - self.activation_reserve_gib
        return max(0, int(free_gib * 2**30 // (self.kv_bytes_per_token * self.block_size)))


@dataclass(frozen=True)
class Calibration:
    """One target/draft pair on one device: coefficients, memory facts, fit error, provenance."""

    name: str
    target: ForwardCoefficients
    draft: DraftCost = field(default_factory=DraftCost)
    overhead_fraction: float = 0.0  # of target time, in steps that speculate (TurboSpec: 0.05)
    overhead_fixed_ms: float = 0.0  # per speculating step (rejection sampling, bookkeeping)
    batched_tokens_convention: str = "exact"  # or "turbospec_v1" (base token counted twice)
    memory: MemorySpec = field(default_factory=MemorySpec)
    description: str = ""
    device: str = ""
    fit_error: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format_version": 1, **asdict(self)}


def calibration_from_dict(data: dict, source: str = "<dict>") -> Calibration:
    """Build a Calibration from parsed JSON, naming the file and key on error."""
    try:
        target = ForwardCoefficients(**data["target"])
        draft_data = dict(data.get("draft") or {})
        if draft_data.get("forward") is not None:
            draft_data["forward"] = ForwardCoefficients(**draft_data["forward"])
        draft = DraftCost(**draft_data)
        memory = MemorySpec(**(data.get("memory") or {}))
        keys = {"overhead_fraction", "overhead_fixed_ms", "batched_tokens_convention",
                "description", "device", "fit_error", "provenance"}
        extra = {k: data[k] for k in keys if k in data}
        cal = Calibration(name=str(data["name"]), target=target, draft=draft, memory=memory, **extra)
    except KeyError as exc:
        raise CalibrationError(f"{source}: missing key {exc}") from None
    except TypeError as exc:
        raise CalibrationError(f"{source}: {exc}") from None
    if cal.draft.kind not in ("sequential", "linear", "fraction"):
        raise CalibrationError(f"{source}: draft.kind must be sequential, linear or fraction, not {cal.draft.kind!r}")
    if cal.draft.kind == "sequential" and cal.draft.forward is None:
        raise CalibrationError(f"{source}: draft.kind 'sequential' needs draft.forward coefficients")
    if cal.batched_tokens_convention not in ("exact", "turbospec_v1"):
        raise CalibrationError(f"{source}: batched_tokens_convention must be 'exact' or 'turbospec_v1'")
    return cal


def available_calibrations() -> list[str]:
    return sorted(p.stem for p in CALIBRATION_DIR.glob("*.json"))


def load_calibration(name_or_path: str | Path) -> Calibration:
    """Load a shipped calibration by name, or any calibration JSON by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CALIBRATION_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise CalibrationError(f"calibration {str(name_or_path)!r} not found: give a file path or one of "
                               f"{', '.join(available_calibrations())}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{path}: not readable JSON ({exc})") from None
    return calibration_from_dict(data, str(path))


def save_calibration(cal: Calibration, path: str | Path) -> None:
    Path(path).write_text(json.dumps(cal.to_dict(), indent=2, sort_keys=False) + "\n")


@dataclass(slots=True)
class StepTime:
    draft_s: float
    verify_s: float
    overhead_s: float

    @property
    def total_s(self) -> float:
        return self.draft_s + self.verify_s + self.overhead_s


class CostModel:
    """Prices a StepShape with one calibration. Pure and cheap: policies call it in loops."""

    def __init__(self, calibration: Calibration):
        self.calibration = calibration
        self._target = calibration.target
        self._draft = calibration.draft
        self._turbospec = calibration.batched_tokens_convention == "turbospec_v1"

    def target_ms(self, shape: StepShape) -> float:
        batched = shape.verify_tokens + shape.prefill_tokens
        if self._turbospec:  # N_sched_wo_spec = B + prefill tokens counted again (reference 1.4)
            batched += shape.num_decode
        return self._target.forward_ms(batched, shape.kv_tokens, shape.num_seqs,
                                       shape.num_proposing > 0, shape.prefill_attention_tokens2)

    def draft_ms(self, shape: StepShape, target_ms: float) -> float:
        if shape.max_k <= 0:
            return 0.0
        d = self._draft
        if d.kind == "fraction":
            return d.fraction_of_target * target_ms
        if d.kind == "linear":
            scheduled = shape.num_decode + shape.prefill_tokens
            return (d.fixed_ms + d.per_kv_token_ms * shape.kv_tokens + d.per_scheduled_token_ms * scheduled
                    + d.per_k_ms * shape.max_k + d.per_seq_ms * shape.num_proposing)
        fwd = d.forward
        kv_per_seq = shape.kv_tokens / max(1, shape.num_seqs)
        total = 0.0
        for drafting in shape.draft_batch_sizes:
            total += fwd.forward_ms(drafting, kv_per_seq * drafting, drafting)
        return total

    def step_time(self, shape: StepShape) -> StepTime:
        target = self.target_ms(shape)
        draft = self.draft_ms(shape, target)
        overhead = 0.0
        if shape.max_k > 0:
            overhead = self.calibration.overhead_fraction * target + self.calibration.overhead_fixed_ms
        return StepTime(draft / 1000.0, target / 1000.0, overhead / 1000.0)

    def step_time_s(self, shape: StepShape) -> float:
        return self.step_time(shape).total_s


def uniform_shape(num_decode: int, kv_tokens: int, k: int, prefill_tokens: int = 0,
                  num_prefill: int = 0) -> StepShape:
    """Shape of a decode step where every request proposes the same k (what SmartSpec prices)."""
    return StepShape(num_decode=num_decode, num_proposing=num_decode if k > 0 else 0,
                     verify_tokens=num_decode * (k + 1), prefill_tokens=prefill_tokens,
                     num_prefill=num_prefill, kv_tokens=kv_tokens, max_k=k,
                     draft_batch_sizes=(num_decode,) * k)


def shape_from_proposals(decode_contexts: Sequence[int], ks: Sequence[int], prefill_chunks: Sequence[int] = (),
                         prefill_contexts: Sequence[int] = ()) -> StepShape:
    """Shape of a step with per-request proposal lengths ks and optional prefill chunks."""
    max_k = max(ks, default=0)
    draft_batch_sizes = tuple(sum(1 for k in ks if k >= j) for j in range(1, max_k + 1))
    attn2 = sum(c * (ctx + c / 2.0) for c, ctx in zip(prefill_chunks, prefill_contexts))
    return StepShape(num_decode=len(ks), num_proposing=sum(1 for k in ks if k > 0),
                     verify_tokens=sum(ks) + len(ks), prefill_tokens=sum(prefill_chunks),
                     num_prefill=len(prefill_chunks), kv_tokens=sum(decode_contexts) + sum(prefill_contexts),
                     max_k=max_k, draft_batch_sizes=draft_batch_sizes, prefill_attention_tokens2=attn2)


def expected_tokens(alpha: float, k: int) -> float:
    """Expected tokens a step emits for one request proposing k under i.i.d. acceptance alpha (bonus included)."""
    if k <= 0:
        return 1.0
    if alpha >= 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


__all__ = ["StepShape", "ForwardCoefficients", "DraftCost", "MemorySpec", "Calibration", "CostModel", "StepTime",
           "CalibrationError", "load_calibration", "save_calibration", "calibration_from_dict",
           "available_calibrations", "uniform_shape", "shape_from_proposals", "expected_tokens",
           "DEFAULT_CALIBRATION", "OOM_STEP_TIME_S"]

"""Calibrations: the JSON files that hold one target/draft pair's step-time coefficients on one GPU.

A calibration (shipped in `calibrations/`, or any path) holds fitted coefficients in
milliseconds, the memory facts that size the KV cache, the range it may be used over
(`valid_range`), its fit error and its provenance. `profile-gpu` writes them; the engine and the
policies read them through `load_calibration`, which refuses a file that could price a step
wrongly: missing or mistyped fields, non-finite numbers, or a step time that is negative (zero
for a forward) anywhere in `valid_range`, found exactly on the corners of the piecewise-linear
model (`coefficients.forward_corners`). Each refusal is one `CalibrationError` line naming the
file and, for a step time, the point and the terms that make it negative.
"""
from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

from specdec_sim.costmodel.coefficients import (DraftCost, ForwardCoefficients, LowPoint, ValidRange,
                                                lowest_draft_forward, lowest_forward, lowest_linear_draft)
from specdec_sim.costmodel.jsonfiles import find_named_json, read_json
from specdec_sim.safe_output import write_text_atomic

CALIBRATION_DIR = Path(__file__).parent / "calibrations"
DEFAULT_CALIBRATION = "llama3.1-8b-eagle-h100"
FORMAT_VERSION = 1
DRAFT_KINDS = ("sequential", "linear", "fraction")
FIRST_PASSES = ("drafting", "step_tokens")
CONVENTIONS = ("exact", "turbospec_v1")
ENGINES = ("v1", "v0")  # the vLLM engine generation a calibration describes
SCORERS = ("mqa", "batch_expansion")  # how the target scores k+1 positions per request (see model.py)


class CalibrationError(ValueError):
    """A calibration file or name that cannot be used."""


@dataclass(frozen=True)
class MemorySpec:
    """Facts that size the KV cache: blocks = (GPU memory * utilisation - weights - reserve) / block bytes."""

    gpu_memory_gib: float = 80.0
    gpu_memory_utilization: float = 0.9
    weights_gib: float = 16.0
    activation_reserve_gib: float = 1.0
    kv_bytes_per_token: int = 131072  # target + draft KV bytes per token (all layers, all GPUs)
    block_size: int = 16

    def free_bytes(self) -> float:
        free_gib = self.gpu_memory_gib * self.gpu_memory_utilization - self.weights_gib - self.activation_reserve_gib
        return max(0.0, free_gib * 2**30)

    def kv_capacity_tokens(self) -> int:
        """Tokens of KV cache the free memory holds (whatever the block size)."""
        return int(self.free_bytes() // self.kv_bytes_per_token)

    def num_kv_blocks(self, block_size: int | None = None) -> int:
        """KV-cache blocks of `block_size` tokens (default: this spec's) that the free memory holds."""
        size = self.block_size if block_size is None else block_size
        return max(0, int(self.free_bytes() // (self.kv_bytes_per_token * size)))


def default_valid_range(memory: MemorySpec) -> ValidRange:
    """vLLM's default batch (256 sequences), simulate's token budget (8192), context up to the KV capacity."""
    return ValidRange(max_context_tokens=memory.kv_capacity_tokens())


@dataclass(frozen=True)
class Calibration:
    """One target/draft pair on one device: coefficients, memory facts, valid range, fit error, provenance."""

    name: str
    target: ForwardCoefficients
    draft: DraftCost = field(default_factory=DraftCost)
    overhead_fraction: float = 0.0  # of target time, in steps that speculate (TurboSpec: 0.05)
    overhead_fixed_ms: float = 0.0  # per speculating step (rejection sampling, bookkeeping)
    step_overhead_ms: float = 0.0  # per step, speculating or not (scheduling, sampling, launches, host sync)
    per_request_ms: float = 0.0  # per sequence of a step (host: inputs, scheduling, output processing)
    sampling_row_ms: float = 0.0  # per logits row sampled or verified (vocabulary-sized work: B x (k+1) rows)
    spec_per_request_ms: float = 0.0  # per drafting request of a speculating step (rejection-sampler and draft
    #                                   bookkeeping)
    dynamic_k_tax_ms: float = 0.0  # per step of a policy that varies k (PIECEWISE instead of FULL CUDA graphs)
    dynamic_k_tax_spec_ms: float = 0.0  # the same, per speculating step
    legacy_spec_per_request_ms: float = 0.0  # what vLLM V1 <= 0.10 paid per drafting request: prices the legacy
    #                                          sources the calibration was fitted to, never a simulated step
    engine: str = "v1"  # the vLLM engine the coefficients describe: v1, or v0 (2024, SpecDecodeWorker)
    scorer: str = "mqa"  # mqa: the k+1 positions of a request are one query block (one KV read); batch_expansion:
    #                     each position is its own sequence reading the request's whole context (V0's default)
    cuda_graph_max_batch: int = 0  # decode batches of more sequences run eagerly (V0: 256); 0 = no limit
    eager_forward_ms: float = 0.0  # extra time of a target forward run without CUDA graphs (kernel launches)
    eager_draft_forward_ms: float = 0.0  # the same for one draft-model forward
    tensor_parallel: int = 1  # GPUs the target is sharded over (memory.gpu_memory_gib sums them)
    max_model_len: int = 0  # the model's context limit (max_position_embeddings); 0 = not stated
    ngram_fraction_of_target: float = 0.0  # prompt lookup's draft cost on this target, when `draft` prices another
    #                                        proposer (0: this calibration cannot price n-gram drafting)
    batched_tokens_convention: str = "exact"  # or "turbospec_v1" (base token counted twice)
    memory: MemorySpec = field(default_factory=MemorySpec)
    valid_range: ValidRange | None = None  # None: default_valid_range(memory), filled in on creation
    description: str = ""
    device: str = ""
    fit_error: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.valid_range is None:
            object.__setattr__(self, "valid_range", default_valid_range(self.memory))

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, **asdict(self)}


# ---- field checks: names, types, finite numbers, bounds ------------------------------------------

MINIMUM = {"legacy_spec_per_request_ms": 0, "per_request_ms": 0, "sampling_row_ms": 0, "spec_per_request_ms": 0, "dynamic_k_tax_ms": 0,
           "dynamic_k_tax_spec_ms": 0, "cuda_graph_max_batch": 0, "eager_forward_ms": 0, "eager_draft_forward_ms": 0,
           "head_after_knee_ms": 0, "ngram_fraction_of_target": 0, "tensor_parallel": 1, "max_model_len": 0, "step_overhead_ms": 0, "knee_tokens": 0, "prefill_attention_ms": 0, "fraction_of_target": 0, "overhead_fraction": 0,
           "weights_gib": 0, "activation_reserve_gib": 0, "kv_bytes_per_token": 1, "block_size": 1,
           "max_batch_size": 1, "max_batched_tokens": 1, "max_context_tokens": 0, "max_k": 1}
POSITIVE = ("gpu_memory_gib", "gpu_memory_utilization")
AT_MOST = {"gpu_memory_utilization": 1.0}


def _fail(source: str, message: str) -> CalibrationError:
    return CalibrationError(f"{source}: {message}")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: object, key: str, kind: str, source: str) -> float | int:
    """A finite number (a whole one for kind 'int') within the bounds MINIMUM/POSITIVE/AT_MOST give `key`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(source, f"{key} must be a number, not {_short(value)}")
    if not math.isfinite(value):
        raise _fail(source, f"{key} must be finite, not {value}")
    name = key.rsplit(".", 1)[-1]
    if kind == "int":
        if value != int(value):
            raise _fail(source, f"{key} must be a whole number, not {value}")
        value = int(value)
    if name in MINIMUM and value < MINIMUM[name]:
        raise _fail(source, f"{key} must be >= {MINIMUM[name]}, not {value:g}")
    if name in POSITIVE and value <= 0:
        raise _fail(source, f"{key} must be > 0, not {value:g}")
    if name in AT_MOST and value > AT_MOST[name]:
        raise _fail(source, f"{key} must be <= {AT_MOST[name]:g}, not {value:g}")
    return value


def _typed(section: object, cls: type, where: str, source: str, skip: tuple[str, ...] = ()) -> dict:
    """Keyword arguments for dataclass `cls` from a JSON object: known keys only, required ones present,
    every value of the field's declared type (float/int: finite numbers; str: strings)."""
    if not isinstance(section, dict):
        raise _fail(source, f"{where} must be a JSON object, not {_short(section)}")
    declared = {f.name: f for f in fields(cls)}
    unknown = [k for k in section if k not in declared]
    if unknown:
        raise _fail(source, f"{where}: unknown key {unknown[0]!r} (expected {', '.join(declared)})")
    out: dict = {}
    for name, f in declared.items():
        if name in skip:
            continue
        if name not in section:
            if f.default is MISSING and f.default_factory is MISSING:
                raise _fail(source, f"missing key '{where}.{name}'")
            continue
        value, kind = section[name], str(f.type)
        if kind in ("float", "int"):
            out[name] = _number(value, f"{where}.{name}", kind, source)
        elif kind == "str":
            if not isinstance(value, str):
                raise _fail(source, f"{where}.{name} must be a string, not {_short(value)}")
            out[name] = value
    return out


def _forward(section: object, where: str, source: str) -> ForwardCoefficients:
    return ForwardCoefficients(**_typed(section, ForwardCoefficients, where, source))


def _draft(section: object, source: str) -> DraftCost:
    if section is None:
        return DraftCost()
    args = _typed(section, DraftCost, "draft", source, skip=("forward",))
    forward = section.get("forward")
    if forward is not None:
        args["forward"] = _forward(forward, "draft.forward", source)
    draft = DraftCost(**args)
    if draft.kind not in DRAFT_KINDS:
        raise _fail(source, f"draft.kind must be sequential, linear or fraction, not {draft.kind!r}")
    if draft.first_pass not in FIRST_PASSES:
        raise _fail(source, f"draft.first_pass must be drafting or step_tokens, not {draft.first_pass!r}")
    if draft.kind == "sequential" and draft.forward is None:
        raise _fail(source, "draft.kind 'sequential' needs draft.forward coefficients")
    return draft


def _top_level(data: dict, source: str) -> dict:
    """The calibration's own scalar fields, typed; required `name` and `target` present."""
    for key in ("name", "target"):
        if key not in data:
            raise _fail(source, f"missing key '{key}'")
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise _fail(source, f"format_version {_short(version)} is not supported (this version reads {FORMAT_VERSION})")
    if not isinstance(data["name"], str) or not data["name"].strip():
        raise _fail(source, f"name must be a non-empty string, not {_short(data['name'])}")
    out: dict = {"name": data["name"]}
    for key in ("overhead_fraction", "overhead_fixed_ms", "step_overhead_ms", "ngram_fraction_of_target",
                "per_request_ms", "sampling_row_ms", "spec_per_request_ms", "dynamic_k_tax_ms", "dynamic_k_tax_spec_ms",
                "legacy_spec_per_request_ms",
                "eager_forward_ms", "eager_draft_forward_ms"):
        if key in data:
            out[key] = _number(data[key], key, "float", source)
    for key in ("tensor_parallel", "max_model_len", "cuda_graph_max_batch"):
        if key in data:
            out[key] = _number(data[key], key, "int", source)
    for key in ("batched_tokens_convention", "description", "device", "engine", "scorer"):
        if key in data and not isinstance(data[key], str):
            raise _fail(source, f"{key} must be a string, not {_short(data[key])}")
        if key in data:
            out[key] = data[key]
    for key in ("fit_error", "provenance"):
        if key in data and not isinstance(data[key], dict):
            raise _fail(source, f"{key} must be a JSON object, not {_short(data[key])}")
        if key in data:
            out[key] = data[key]
    if out.get("batched_tokens_convention", "exact") not in CONVENTIONS:
        raise _fail(source, "batched_tokens_convention must be 'exact' or 'turbospec_v1'")
    if out.get("engine", "v1") not in ENGINES:
        raise _fail(source, f"engine must be one of {', '.join(ENGINES)}, not {_short(out['engine'])}")
    if out.get("scorer", "mqa") not in SCORERS:
        raise _fail(source, f"scorer must be one of {', '.join(SCORERS)}, not {_short(out['scorer'])}")
    return out


# ---- step-time checks over the valid range ---------------------------------------------------------

def _negative_terms(prefix: str, values: object) -> str:
    terms = [f"{prefix}{f.name}={getattr(values, f.name):.4g}" for f in fields(values)
             if isinstance(getattr(values, f.name), (int, float)) and getattr(values, f.name) < 0]
    return ", ".join(terms) or f"no negative term; {prefix}fixed_ms must be > 0"


def _check_low(low: LowPoint, what: str, terms: str, rng: ValidRange, source: str, strict: bool) -> None:
    ok = math.isfinite(low.ms) and (low.ms > 0 if strict else low.ms >= 0)
    if not ok:
        raise _fail(source, f"{what} {low.ms:.4g} ms at {low.where()} ({terms}; {rng.describe()})")


def check_step_times(cal: Calibration, source: str | None = None) -> Calibration:
    """Refuse (CalibrationError, one line) a calibration whose target forward is not finite and > 0, or
    whose draft or overhead time is negative, somewhere in its valid range. Exact: see coefficients."""
    source = source or f"calibration {cal.name!r}"
    rng = cal.valid_range
    low = lowest_forward(cal.target, rng)
    _check_low(low, "target step time", _negative_terms("target.", cal.target), rng, source, strict=True)
    draft = cal.draft
    if draft.kind == "sequential" and draft.forward is not None:
        low_draft = lowest_forward(draft.forward, rng) if draft.first_pass == "step_tokens" else \
            lowest_draft_forward(draft.forward, rng)
        _check_low(low_draft, "draft forward time", _negative_terms("draft.forward.", draft.forward), rng, source,
                   strict=False)
    elif draft.kind == "linear":
        _check_low(lowest_linear_draft(draft, rng), "draft time", _negative_terms("draft.", draft), rng, source,
                   strict=False)
    overhead = LowPoint(cal.overhead_fraction * low.ms + cal.overhead_fixed_ms, low.batch, low.batched_tokens,
                        low.context, True)
    _check_low(overhead, "speculation overhead", f"overhead_fixed_ms={cal.overhead_fixed_ms:.4g}", rng, source,
               strict=False)
    return cal


ENGINE_ERAS = ("current", "legacy")


def as_era(cal: Calibration, era: str) -> Calibration:
    """`cal` as an engine generation priced it: `legacy` (vLLM V1 <= 0.10) with its own per-request speculation cost;
    such an engine also ran PIECEWISE CUDA graphs, so price it with `CostModel(..., dynamic_k=True)`."""
    if era not in ENGINE_ERAS:
        raise ValueError(f"engine era {era!r} is not one of {', '.join(ENGINE_ERAS)}")
    if era == "legacy":
        return replace(cal, spec_per_request_ms=cal.legacy_spec_per_request_ms)
    return cal


def calibration_from_dict(data: dict, source: str = "<dict>") -> Calibration:
    """Build and check a Calibration from parsed JSON; CalibrationError names the file and key or point."""
    if not isinstance(data, dict):
        raise _fail(source, "not a JSON object")
    top = _top_level(data, source)
    target = _forward(data["target"], "target", source)
    draft = _draft(data.get("draft"), source)
    memory_data = data.get("memory")
    memory = MemorySpec(**_typed({} if memory_data is None else memory_data, MemorySpec, "memory", source))
    valid = data.get("valid_range")
    valid_range = default_valid_range(memory) if valid is None else \
        ValidRange(**{"max_context_tokens": memory.kv_capacity_tokens(),
                      **_typed(valid, ValidRange, "valid_range", source)})
    cal = Calibration(target=target, draft=draft, memory=memory, valid_range=valid_range, **top)
    return check_step_times(cal, source)


def _short_unit(unit: str) -> str:
    """How a fit_error entry's mean error reads: % of measured, percentage points, or % of best-k rows off."""
    if unit.startswith("pp"):
        return "pp"
    if unit.startswith("k"):
        return "% of best k off"
    return "%"


def provenance_line(cal: Calibration) -> str:
    """One line: the calibration, its device, where its numbers come from and its error against each measured set."""
    prov = cal.provenance or {}
    source = str(prov.get("summary") or prov.get("source") or "no provenance given")
    source = " ".join(source.split())
    if "summary" not in prov and ". " in source:
        source = source.split(". ", 1)[0] + "."
    errors = []
    for name, err in sorted((cal.fit_error or {}).items()):
        if isinstance(err, dict) and isinstance(err.get("mape_pct"), (int, float)):
            points = f" over {err['points']} points" if isinstance(err.get("points"), int) else ""
            errors.append(f"{name} {err['mape_pct']:.1f} {_short_unit(str(err.get('unit', '%')))}{points}")
    source = source.rstrip(" .;") + "."
    error = " Error vs " + ", ".join(errors) if errors else " No measured error recorded."
    device = f" on {cal.device}" if cal.device else ""
    return f"calibration {cal.name}{device}: {source}{error}"


def available_calibrations() -> list[str]:
    return sorted(p.stem for p in CALIBRATION_DIR.glob("*.json"))


def load_calibration(name_or_path: str | Path) -> Calibration:
    """Load a shipped calibration by name, or any calibration JSON by path."""
    path = find_named_json(name_or_path, CALIBRATION_DIR, "calibration", CalibrationError)
    return calibration_from_dict(read_json(path, CalibrationError), str(path))


def save_calibration(cal: Calibration, path: str | Path) -> None:
    """Write `cal` as JSON (valid_range included), atomically."""
    write_text_atomic(path, json.dumps(cal.to_dict(), indent=2, sort_keys=False) + "\n")

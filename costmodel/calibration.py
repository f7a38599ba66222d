"""Calibrations: the JSON files that hold one target/draft pair's step-time coefficients on one GPU.

A calibration (shipped in `calibrations/`, or any path) holds fitted coefficients in
milliseconds, the memory facts that size the KV cache, its fit error and its provenance.
`profile-gpu` writes them; the engine and the policies read them through `load_calibration`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from specdec_sim.costmodel.coefficients import DraftCost, ForwardCoefficients
from specdec_sim.costmodel.jsonfiles import find_named_json, read_json

CALIBRATION_DIR = Path(__file__).parent / "calibrations"
DEFAULT_CALIBRATION = "llama3-8b-eagle-h100"


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

    def num_kv_blocks(self, block_size: int | None = None) -> int:
        """KV-cache blocks of `block_size` tokens (default: this spec's) that the free memory holds."""
        free_gib = self.gpu_memory_gib * self.gpu_memory_utilization - self.weights_gib - self.activation_reserve_gib
        size = self.block_size if block_size is None else block_size
        return max(0, int(free_gib * 2**30 // (self.kv_bytes_per_token * size)))


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
    path = find_named_json(name_or_path, CALIBRATION_DIR, "calibration", CalibrationError)
    return calibration_from_dict(read_json(path, CalibrationError), str(path))


def save_calibration(cal: Calibration, path: str | Path) -> None:
    Path(path).write_text(json.dumps(cal.to_dict(), indent=2, sort_keys=False) + "\n")

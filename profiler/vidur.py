"""Fit GPU efficiencies (memory, compute, knee) and all-reduce terms to Vidur's real kernel tables (pure numpy).

Vidur (github.com/microsoft/vidur, MIT) measured every non-attention op of one transformer block on
one GPU (`profiling/compute/<gpu>/<model>/mlp.csv`, median ms per op, tensor parallel 1..8) and NCCL
all-reduces (`profiling/network/<gpu>_dgx/all_reduce.csv`). A layer's time is the sum of its op
medians (every op but the embedding, as Vidur's predictor sums them) and is modelled as

    t_layer(N) = fixed_per_layer + W / (BW * memory) + (2 P / (peak * compute)) * max(0, N - knee_tokens)

with W = P * 2 bytes the layer's linear weights per GPU (P = `Architecture.layer_linear_params() / tp`),
BW and peak the datasheet HBM bandwidth and dense bf16 peak (`costmodel.hardware.GPUS`). For a given
knee the model is linear in (fixed, 1/memory, 1/compute): a bounded weighted least squares over the
measured tokens (relative error, each series weighted uniformly in log N so 1..64 tokens count as much
as 1024..4096), searched over the measured token counts for the knee; `Efficiency.knee` is the knee as a
fraction of the roofline crossover N* = peak*compute / (BW*memory), which does not depend on the model.
An all-reduce of S bytes over tp GPUs costs latency + S * 2 (tp - 1) / tp / (link * efficiency).

Only derived numbers leave this module (efficiencies, errors); the tables are read from a path argument.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from specdec_sim.costmodel.architectures import ARCHITECTURES, Architecture
from specdec_sim.costmodel.hardware import GpuSpec
from specdec_sim.profiler.measure_fit import nonnegative_lstsq

VIDUR_OPS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
             "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
# Vidur model folder -> architecture (the model registry, costmodel/architectures.py); Llama-family gated-MLP models only
VIDUR_MODELS = {"meta-llama/Llama-2-7b-hf": "llama2-7b", "meta-llama/Llama-2-70b-hf": "llama2-70b",
                "codellama/CodeLlama-34b-Instruct-hf": "codellama-34b", "meta-llama/Meta-Llama-3-8B": "llama3-8b",
                "meta-llama/Meta-Llama-3-70B": "llama3-70b"}
VIDUR_GPUS = {"h100-sxm": "h100", "a100-80gb": "a100"}  # our GPU key -> Vidur folder
MAX_TOKENS = 8192  # simulate's token budget: fit the range the simulator prices
BYTES = 2


class VidurError(ValueError):
    """A Vidur directory or table that cannot be used (names the file and what is wrong)."""


@dataclass(frozen=True)
class LayerSeries:
    """Measured per-layer dense time of one model at one TP degree on one GPU."""

    model: str  # architecture key
    tp: int
    tokens: np.ndarray
    layer_ms: np.ndarray
    params: float  # linear parameters of one layer on one GPU


@dataclass(frozen=True)
class EfficiencyFit:
    """Efficiencies of one GPU (at one TP degree, or all), fitted to Vidur's tables, and their error."""

    gpu: str
    tp: int | None  # None: fitted over every TP degree
    memory: float
    compute: float
    knee: float  # fraction of the roofline crossover
    knee_tokens: float
    fixed_per_layer_ms: float
    errors: dict = field(default_factory=dict)  # "model/tpN" -> {"mape_pct", "max_abs_pct", "points"}

    def as_dict(self) -> dict:
        return {"memory": round(float(self.memory), 4), "compute": round(float(self.compute), 4),
                "knee": round(float(self.knee), 4), "knee_tokens": round(float(self.knee_tokens), 1),
                "fixed_per_layer_ms": round(float(self.fixed_per_layer_ms), 5), "errors": self.errors}


@dataclass(frozen=True)
class AllReduceFit:
    gpu: str
    tp: int
    latency_ms: float
    efficiency: float
    mape_pct: float
    max_abs_pct: float
    points: int


def _read_rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise VidurError(f"{path}: cannot read ({exc})") from None


def _float(row: dict, key: str, path: Path, line: int) -> float:
    try:
        value = float(row[key])
    except (KeyError, TypeError, ValueError):
        raise VidurError(f"{path}: line {line}: column {key!r} missing or not a number") from None
    if not math.isfinite(value):
        raise VidurError(f"{path}: line {line}: column {key!r} is not finite")
    return value


def _check_shape(row: dict, arch: Architecture, path: Path) -> None:
    """The table's model-shape keys must be the architecture's (hidden, heads, KV heads, intermediate)."""
    want = {"n_embd": arch.hidden, "n_head": arch.heads, "n_kv_head": arch.kv_heads,
            "n_expanded_embd": arch.intermediate}
    for key, value in want.items():
        if key in row and int(float(row[key])) != value:
            raise VidurError(f"{path}: column {key} is {row[key]}, but {arch.name} has {value}")


def read_mlp_table(path: Path, arch: Architecture, max_tokens: int = MAX_TOKENS) -> list[LayerSeries]:
    """One LayerSeries per TP degree of a Vidur mlp.csv (sum of the op medians per layer, emb excluded)."""
    rows = _read_rows(path)
    if not rows:
        raise VidurError(f"{path}: no rows")
    _check_shape(rows[0], arch, path)
    ops = [op for op in VIDUR_OPS if f"time_stats.{op}.median" in rows[0]]
    if "attn_pre_proj" not in ops or "mlp_up_proj" not in ops:
        raise VidurError(f"{path}: not a Vidur mlp.csv (no time_stats.attn_pre_proj.median column)")
    by_tp: dict[int, list[tuple[float, float]]] = {}
    for line, row in enumerate(rows, start=2):
        tokens = _float(row, "num_tokens", path, line)
        tp = int(_float(row, "num_tensor_parallel_workers", path, line))
        if tokens > max_tokens:
            continue
        ms = sum(_float(row, f"time_stats.{op}.median", path, line) for op in ops)
        by_tp.setdefault(tp, []).append((tokens, ms))
    series = []
    for tp, pts in sorted(by_tp.items()):
        a = np.array(sorted(pts))
        series.append(LayerSeries(arch.name, tp, a[:, 0], a[:, 1], arch.layer_linear_params() / tp))
    return series


def read_vidur_compute(vidur_dir: str | Path, gpu_key: str) -> list[LayerSeries]:
    """Every Llama-family series Vidur measured on this GPU (empty when it has none)."""
    root = Path(vidur_dir)
    if not root.is_dir():
        raise VidurError(f"--vidur {root}: not a directory")
    base = root / "profiling" if (root / "profiling").is_dir() else root
    folder = VIDUR_GPUS.get(gpu_key)
    if folder is None:
        return []
    series = []
    for model, arch in VIDUR_MODELS.items():
        path = base / "compute" / folder / model / "mlp.csv"
        if path.is_file():
            series += read_mlp_table(path, ARCHITECTURES[arch])
    return series


def _log_weights(tokens: np.ndarray) -> np.ndarray:
    """Weights uniform in log N, summing to 1 over the series."""
    logs = np.log(np.maximum(tokens, 1.0))
    edges = np.concatenate([[logs[0]], (logs[1:] + logs[:-1]) / 2, [logs[-1]]])
    w = np.maximum(np.diff(edges), 1e-6)
    return w / w.sum()


def _design(series: list[LayerSeries], gpu: GpuSpec, knee_tokens: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns (1, weights ms at 100 % bandwidth, compute ms at 100 % peak past the knee), target, weights."""
    rows, ys, ws = [], [], []
    bw, peak = gpu.hbm_tb_s * 1e12, gpu.peak_tflops * 1e12
    for s in series:
        mem_ms = s.params * BYTES / bw * 1e3
        comp_ms = 2 * s.params / peak * 1e3 * np.maximum(0.0, s.tokens - knee_tokens)
        rows.append(np.column_stack([np.ones_like(s.tokens), np.full_like(s.tokens, mem_ms), comp_ms]))
        ys.append(s.layer_ms)
        ws.append(_log_weights(s.tokens))
    return np.vstack(rows), np.concatenate(ys), np.concatenate(ws)


def _solve(a: np.ndarray, y: np.ndarray, w: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, float]:
    """argmin sum w ((a x - y) / y)^2 subject to x >= lower."""
    r = np.sqrt(w) / y
    aw = a * r[:, None]
    scale = np.maximum(np.abs(aw).max(axis=0), 1e-300)
    z = nonnegative_lstsq(aw / scale, y * r - aw @ lower) / scale
    x = lower + z
    resid = (a @ x - y) * r
    return x, float(resid @ resid)


def predict_layer_ms(s: LayerSeries, gpu: GpuSpec, fit: EfficiencyFit) -> np.ndarray:
    bw, peak = gpu.hbm_tb_s * 1e12 * fit.memory, gpu.peak_tflops * 1e12 * fit.compute
    return (fit.fixed_per_layer_ms + s.params * BYTES / bw * 1e3
            + 2 * s.params / peak * 1e3 * np.maximum(0.0, s.tokens - fit.knee_tokens))


def error_stats(pred: np.ndarray, measured: np.ndarray) -> dict:
    pct = (pred - measured) / measured * 100.0
    return {"mape_pct": round(float(np.mean(np.abs(pct))), 2), "max_abs_pct": round(float(np.max(np.abs(pct))), 2),
            "points": int(len(pct))}


def fit_efficiency(series: list[LayerSeries], gpu: GpuSpec, tp: int | None = None) -> EfficiencyFit:
    """Memory/compute efficiency, knee and per-layer fixed time of `gpu` from Vidur series (one TP or all)."""
    chosen = [s for s in series if tp is None or s.tp == tp]
    if not chosen:
        raise VidurError(f"no Vidur series for {gpu.key}" + (f" at TP {tp}" if tp else ""))
    lower = np.array([0.0, 1.0, 1.0])  # efficiencies <= 1: 1/memory >= 1, 1/compute >= 1
    candidates = np.unique(np.concatenate([s.tokens for s in chosen]))
    best = None
    for knee in candidates[candidates <= 2048]:
        x, sse = _solve(*_design(chosen, gpu, float(knee)), lower)
        if best is None or sse < best[2]:
            best = (float(knee), x, sse)
    knee, x, _ = best
    memory, compute = 1.0 / x[1], 1.0 / x[2]
    crossover = gpu.peak_tflops * compute / (gpu.hbm_tb_s * memory)
    fit = EfficiencyFit(gpu.key, tp, memory, compute, knee / crossover, knee, float(x[0]))
    errors = {f"{s.model}/tp{s.tp}": error_stats(predict_layer_ms(s, gpu, fit), s.layer_ms) for s in chosen}
    return EfficiencyFit(**{**fit.__dict__, "errors": errors})


def fit_allreduce(vidur_dir: str | Path, gpu: GpuSpec, tp: int, max_bytes: float = 2 * 8192 * 8192) -> AllReduceFit:
    """Latency and link efficiency of one all-reduce over tp GPUs of one node (Vidur's DGX table)."""
    folder = VIDUR_GPUS.get(gpu.key)
    root = Path(vidur_dir)
    base = root / "profiling" if (root / "profiling").is_dir() else root
    path = base / "network" / f"{folder}_dgx" / "all_reduce.csv"
    if folder is None or not path.is_file():
        raise VidurError(f"no Vidur all-reduce table for {gpu.key} (looked for {path})")
    pts = []
    for line, row in enumerate(_read_rows(path), start=2):
        workers = int(_float(row, "num_workers", path, line))
        if workers != tp or int(_float(row, "devices_per_node", path, line)) != tp:
            continue
        size = _float(row, "size", path, line)
        if size <= max_bytes:
            pts.append((size, _float(row, "time_stats.all_reduce.median", path, line)))
    if len(pts) < 4:
        raise VidurError(f"{path}: fewer than 4 all-reduce rows with num_workers = devices_per_node = {tp}")
    a = np.array(sorted(pts))
    link_ms = a[:, 0] * 2 * (tp - 1) / tp / (gpu.link_gb_s * 1e9) * 1e3
    design = np.column_stack([np.ones(len(a)), link_ms])
    x, _ = _solve(design, a[:, 1], _log_weights(a[:, 0] / a[0, 0]), np.array([0.0, 1.0]))
    pred = design @ x
    err = error_stats(pred, a[:, 1])
    return AllReduceFit(gpu.key, tp, float(x[0]), 1.0 / float(x[1]), err["mape_pct"], err["max_abs_pct"], len(a))

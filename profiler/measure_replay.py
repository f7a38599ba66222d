"""Step replay: execute steps from the simulator's per-step log on real models, compare with predictions.

Each logged step becomes: `num_decode` sequences verifying ceil(verify_tokens / num_decode) tokens
at context kv_tokens / (num_decode + num_prefill), plus (when prefill_tokens > 0) a prefill
forward of num_prefill chunks of prefill_tokens / num_prefill tokens at the same context, plus
`k_max` sequential one-token draft forwards over the decoding sequences. Predictions come from
`--calibration` through costmodel.CostModel (or from the log's own columns without one).
"""
from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from specdec_sim.profiler.models import build_model
from specdec_sim.profiler.measure_timing import _sync, cpu_clock, make_cache, time_forward, trim_cache
from specdec_sim.costmodel import CostModel, PrefillTerms, StepShape, load_calibration, shape_from_levels
from specdec_sim.safe_output import write_text_atomic

STEP_COLUMNS = ("num_decode", "num_prefill", "prefill_tokens", "verify_tokens", "kv_tokens", "k_max",
                "step_time_s", "draft_s", "verify_s", "overhead_s")


class ReplayError(ValueError):
    """A step log that cannot be replayed (names file, row and column)."""


@dataclass(frozen=True)
class Step:
    row: int
    num_decode: int
    num_prefill: int
    prefill_tokens: int
    verify_tokens: int
    kv_tokens: int
    k_max: int
    logged: tuple[float, float, float, float]  # step_time_s, draft_s, verify_s, overhead_s

    @property
    def context(self) -> int:
        return self.kv_tokens // max(1, self.num_decode + self.num_prefill)

    @property
    def query(self) -> int:
        return math.ceil(self.verify_tokens / self.num_decode) if self.num_decode else 0

    @property
    def prefill_seqs(self) -> int:
        return max(1, self.num_prefill)

    @property
    def chunk(self) -> int:
        return math.ceil(self.prefill_tokens / self.prefill_seqs) if self.prefill_tokens else 0

    def shape(self) -> StepShape:
        attn2 = self.prefill_seqs * self.chunk * (self.context + self.chunk / 2.0) if self.chunk else 0.0
        levels = (self.num_decode,) * self.k_max if self.num_decode else ()
        # kv_tokens in the log already includes the prefill chunks' context
        return shape_from_levels(self.num_decode, levels, self.kv_tokens,
                                 PrefillTerms(self.prefill_tokens, self.num_prefill, 0, attn2),
                                 num_proposing=self.num_decode if self.k_max > 0 else 0,
                                 draft_tokens=self.verify_tokens - self.num_decode)


def _parquet_records(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    import pandas as pd
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ReplayError(f"{path}: not a readable parquet file ({exc})") from None
    return list(df.columns), list(enumerate(df.to_dict("records")))


def _csv_records(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            return list(reader.fieldnames or []), list(enumerate(reader, start=2))
    except UnicodeDecodeError as exc:
        raise ReplayError(f"{path}: not a CSV step log (byte {exc.start} is not UTF-8 text); give the "
                          "steps.csv or steps.parquet that simulate wrote") from None
    except csv.Error as exc:
        raise ReplayError(f"{path}: not a CSV step log ({exc})") from None
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_steps(path: Path) -> list[Step]:
    """Steps of a simulator step log: CSV (row = line number) or parquet (row = 0-based index)."""
    if path.suffix == ".parquet":
        columns, records = _parquet_records(path)
    else:
        columns, records = _csv_records(path)
    missing = [c for c in STEP_COLUMNS if c not in columns]
    if missing:
        raise ReplayError(f"{path}: missing column(s) {', '.join(missing)}")
    steps = []
    for i, r in records:
        bad = next((c for c in STEP_COLUMNS if not _is_count(r.get(c), c in STEP_COLUMNS[:6])), None)
        if bad:
            raise ReplayError(f"{path}: row {i}, column {bad}: not a finite number >= 0 ({r.get(bad)!r})")
        ints = [int(float(r[c])) for c in STEP_COLUMNS[:6]]
        steps.append(Step(i, *ints, logged=tuple(float(r[c]) for c in STEP_COLUMNS[6:])))
    return steps


def _is_count(v, whole: bool) -> bool:
    """A finite number >= 0 (for a count, also below 2**40, far above any step's tokens)."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return False
    return math.isfinite(x) and x >= 0 and (not whole or x < 2**40)


def sample_evenly(steps: list[Step], max_steps: int) -> list[Step]:
    if max_steps <= 0 or len(steps) <= max_steps:
        return steps
    idx = np.unique(np.linspace(0, len(steps) - 1, max_steps).round().astype(int))
    return [steps[i] for i in idx]


def time_draft_steps(model, batch: int, context: int, k: int, device: str, warmup: int, repeats: int,
                     clock: str = "wall") -> float:
    """Median ms of k sequential one-token draft forwards (the cache grows by one token per step)."""
    dtype = next(model.parameters()).dtype
    ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
    cache = make_cache(model, batch, context, device, dtype, new_tokens=k)
    samples = []
    now = time.perf_counter if device.startswith("cuda") else cpu_clock(clock)
    with torch.inference_mode():
        for i in range(warmup + repeats):
            trim_cache(cache, context)
            _sync(device)
            t0 = now()
            for j in range(k):
                pos = torch.full((batch, 1), context + j, device=device)
                model(input_ids=ids, past_key_values=cache, position_ids=pos, use_cache=True)
            _sync(device)
            if i >= warmup:
                samples.append((now() - t0) * 1000.0)
    return float(np.median(samples))


@dataclass
class ReplayRow:
    """One replayed step: the logged step, what the calibration predicts and what the models measured."""

    step: Step
    predicted_draft_s: float
    predicted_verify_s: float
    predicted_step_s: float
    measured_draft_s: float
    measured_verify_s: float
    measured_step_s: float
    error_pct: float  # (predicted - measured) / measured

    def flat(self) -> dict:
        """The CSV row: the step's shape columns, its logged time, then predictions and measurements."""
        shape = {f.name: getattr(self.step, f.name) for f in fields(Step) if f.name != "logged"}
        rest = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "step"}
        return {**shape, "logged_step_s": self.step.logged[0], **rest}


def execute_step(step: Step, target, draft, device: str, warmup: int, repeats: int, memo: dict,
                 clock: str = "wall") -> tuple[float, float]:
    """Measured (draft_s, verify_s) of one step; identical shapes are timed once."""
    key = (step.num_decode, step.query, step.context, step.prefill_seqs, step.chunk, step.k_max)
    if key not in memo:
        verify_ms = draft_ms = 0.0
        if step.num_decode:
            verify_ms += time_forward(target, step.num_decode, step.query, step.context, device, warmup,
                                      repeats, clock=clock).median_ms
        if step.chunk:
            verify_ms += time_forward(target, step.prefill_seqs, step.chunk, step.context, device, warmup,
                                      repeats, logits_to_keep=1, clock=clock).median_ms
        if step.k_max and step.num_decode:
            draft_ms = time_draft_steps(draft, step.num_decode, step.context, step.k_max, device, warmup, repeats,
                                        clock)
        memo[key] = (draft_ms / 1000.0, verify_ms / 1000.0)
    return memo[key]


def predict(step: Step, model: CostModel | None) -> tuple[float, float, float]:
    """(draft_s, verify_s, total_s) the calibration gives, or the log's own numbers without one."""
    if model is None:
        total, draft_s, verify_s, _ = step.logged
        return draft_s, verify_s, total
    t = model.step_time(step.shape())
    return t.draft_s, t.verify_s, t.total_s


def run_replay(steps_csv: Path, target: str, draft: str, device: str, dtype: str, calibration: str | None,
               out: Path, max_steps: int, warmup: int, repeats: int, load_weights: bool = False,
               seed: int = 0, clock: str = "wall") -> int:
    """Replay the sampled steps, write per-step rows to `out`, print total and mean error; returns 0."""
    steps = sample_evenly(read_steps(steps_csv), max_steps)
    if not steps:
        raise ReplayError(f"{steps_csv}: no steps")
    cost = CostModel(load_calibration(calibration)) if calibration else None
    models = build_model(target, device, dtype, load_weights, seed), build_model(draft, device, dtype, load_weights, seed)
    memo: dict = {}
    rows = []
    for s in steps:
        m_draft, m_verify = execute_step(s, *models, device, warmup, repeats, memo, clock)
        p_draft, p_verify, p_total = predict(s, cost)
        measured = m_draft + m_verify
        err = (p_total - measured) / measured * 100.0 if measured > 0 else float("nan")
        rows.append(ReplayRow(s, p_draft, p_verify, p_total, m_draft, m_verify, measured, round(err, 3)))
    write_rows(out, rows)
    total_p, total_m = sum(r.predicted_step_s for r in rows), sum(r.measured_step_s for r in rows)
    errs = np.array([abs(r.error_pct) for r in rows if not math.isnan(r.error_pct)])
    source = f"calibration {calibration}" if calibration else "the step log"
    print(f"replayed {len(rows)} steps ({len(memo)} distinct shapes) on {device}; predictions from {source}")
    print(f"total: predicted {total_p:.4f} s, measured {total_m:.4f} s, error "
          f"{(total_p - total_m) / total_m * 100.0 if total_m else float('nan'):+.2f} %; "
          f"mean |per-step error| {errs.mean() if len(errs) else float('nan'):.2f} % (max "
          f"{errs.max() if len(errs) else float('nan'):.2f} %)")
    print(f"wrote {out}")
    return 0


def write_rows(path: Path, rows: list[ReplayRow]) -> None:
    """The replay CSV, written to a temporary name and renamed into place."""
    flat = [r.flat() for r in rows]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(flat[0]) if flat else [])
    writer.writeheader()
    writer.writerows(flat)
    write_text_atomic(path, buffer.getvalue())

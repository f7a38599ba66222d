"""Published serving measurements as records the calibration builder fits and checks (pure Python).

`profiler/data/published_measurements.csv` holds the figures copied from public sources (see
`profiler/data/SOURCE.md`), one value a row: columns `set, role, target, proposer, gpu, tp, batch, k,
context_tokens, acceptance_length, metric, value, unit, source, note`, and optionally `engine_era` (the engine
generation that measured the point: `current`, the default: a 2026 vLLM V1, or V0, both running the decode
forward as one CUDA graph; or `legacy`: vLLM V1 up to v0.10, whose default PIECEWISE CUDA graphs are what a
policy that varies k pays today, so a legacy point is priced with the calibration's dynamic-k tax and its
own per-request speculation cost, `legacy_spec_per_request_ms`), `position_rates` (`;`-separated unconditional per-position acceptance rates, for `best_k`) and
`candidates` (`;`-separated proposal lengths a `best_k` row chooses among). `role` says what the builder
does with a set: `fit` (its points constrain the serving terms), `check` (its error is reported but
not fitted) or `parameter` (a published fit coefficient the builder uses as is, e.g. n-gram drafting
as a share of verification). Metrics:

* `tpot_ms`: batch-level TPOT; the builder predicts step_time(batch, k) / acceptance_length (at batch 1
  a step emits AL tokens, so step time = TPOT * AL);
* `step_ms`: the time of one step of `batch` requests at uniform k;
* `share_draft_pct`, `share_verify_pct`, `share_overhead_pct`: a part of the step in % of it;
* `step_overhead_ms`: the per-step engine overhead, every step;
* `best_k`: the best uniform k at this batch (k column = the largest k searched; with `position_rates`, a
  step emits 1 + the sum of the first k rates per request, else alpha from `acceptance_length` at k = 3);
* `forward_ms`: one forward pass (profile-gpu CSV rows; `proposer` names the role, target or draft).

Targets are matched by shape (`llama3.1-8b` and `llama3-8b` share every shape the cost sees).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PUBLISHED = Path(__file__).parent / "data" / "published_measurements.csv"
COLUMNS = ("set", "role", "target", "proposer", "gpu", "tp", "batch", "k", "context_tokens", "acceptance_length",
           "metric", "value", "unit", "source", "note", "engine_era", "position_rates", "candidates")
ENGINE_ERAS = ("current", "legacy")
ROLES = ("fit", "check", "parameter")
STEP_METRICS = ("tpot_ms", "step_ms", "share_draft_pct", "share_verify_pct", "share_overhead_pct", "best_k")
METRICS = STEP_METRICS + ("step_overhead_ms", "forward_ms")


class PublishedError(ValueError):
    """A published-measurements file that cannot be used (names the file, line and column)."""


@dataclass(frozen=True)
class Measure:
    """One measured (or published-fit) value and the setting it was measured in."""

    set: str
    role: str
    target: str
    proposer: str  # none, eagle, eagle3, ngram, draft:<arch>, * (any); forward_ms rows: target or draft
    gpu: str
    tp: int
    metric: str
    value: float
    unit: str = ""
    batch: int = 1
    k: int = 0
    context_tokens: int = 0
    acceptance_length: float = 1.0
    source: str = ""
    note: str = ""
    query: int = 1  # forward_ms rows: query tokens per request
    prefill: bool = False  # forward_ms rows: a prefill chunk (attention over the chunk itself)
    engine_era: str = "current"  # legacy: vLLM V1 <= 0.10 (PIECEWISE graphs: priced with the dynamic-k tax)
    position_rates: tuple[float, ...] = ()  # best_k rows: unconditional per-position acceptance rates
    candidates: tuple[int, ...] = ()  # best_k rows: the proposal lengths chosen among (default 0..k)


def same_shape(a: str, b: str) -> bool:
    """Whether two architecture names share every shape the cost model sees (Llama-3 vs 3.1 differ in context)."""
    canon = {"llama3.1-8b": "llama3-8b", "llama3.1-70b": "llama3-70b", "llama3.3-70b": "llama3-70b"}
    return canon.get(a, a) == canon.get(b, b)


def _int(row: dict, key: str, where: str, default: int) -> int:
    text = (row.get(key) or "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise PublishedError(f"{where}: column {key!r} must be a number, not {text!r}") from None
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise PublishedError(f"{where}: column {key!r} must be a whole number >= 0, not {text!r}")
    return int(value)


def _positive(row: dict, key: str, where: str, default: float | None = None) -> float:
    text = (row.get(key) or "").strip()
    if not text and default is not None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise PublishedError(f"{where}: column {key!r} must be a number, not {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise PublishedError(f"{where}: column {key!r} must be finite and >= 0, not {text!r}")
    return value


def _numbers(row: dict, key: str, where: str, kind: type) -> tuple:
    text = (row.get(key) or "").strip()
    if not text:
        return ()
    try:
        values = tuple(kind(v) for v in text.split(";") if v.strip())
    except ValueError:
        raise PublishedError(f"{where}: column {key!r} must be ';'-separated numbers, not {text!r}") from None
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise PublishedError(f"{where}: column {key!r} must hold finite numbers >= 0, not {text!r}")
    return values


def measure_from_row(row: dict, where: str) -> Measure:
    for key in ("set", "role", "target", "proposer", "gpu", "metric"):
        if not (row.get(key) or "").strip():
            raise PublishedError(f"{where}: column {key!r} is empty")
    if row["role"] not in ROLES:
        raise PublishedError(f"{where}: column 'role' must be one of {', '.join(ROLES)}, not {row['role']!r}")
    if row["role"] != "parameter" and row["metric"] not in METRICS:
        raise PublishedError(f"{where}: column 'metric' must be one of {', '.join(METRICS)}, not {row['metric']!r}")
    m = Measure(set=row["set"].strip(), role=row["role"], target=row["target"].strip(),
                proposer=row["proposer"].strip(), gpu=row["gpu"].strip(), tp=max(1, _int(row, "tp", where, 1)),
                metric=row["metric"].strip(), value=_positive(row, "value", where), unit=row.get("unit") or "",
                batch=max(1, _int(row, "batch", where, 1)), k=_int(row, "k", where, 0),
                context_tokens=_int(row, "context_tokens", where, 0),
                acceptance_length=_positive(row, "acceptance_length", where, 1.0),
                source=row.get("source") or "", note=row.get("note") or "",
                engine_era=(row.get("engine_era") or "current").strip(),
                position_rates=_numbers(row, "position_rates", where, float),
                candidates=_numbers(row, "candidates", where, int))
    if m.engine_era not in ENGINE_ERAS:
        raise PublishedError(f"{where}: column 'engine_era' must be one of {', '.join(ENGINE_ERAS)}, "
                             f"not {m.engine_era!r}")
    if m.metric == "tpot_ms" and m.acceptance_length < 1.0:
        raise PublishedError(f"{where}: column 'acceptance_length' must be >= 1 for a tpot_ms row")
    if m.metric in ("tpot_ms", "step_ms", "step_overhead_ms", "forward_ms") and m.value <= 0:
        raise PublishedError(f"{where}: column 'value' must be > 0 for {m.metric}")
    return m


def read_published(path: str | Path = DEFAULT_PUBLISHED) -> list[Measure]:
    """Every row of a published-measurements CSV as a Measure; PublishedError names file, line and column."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("set", "role", "target", "proposer", "gpu", "metric", "value")
                       if c not in (reader.fieldnames or [])]
            if missing:
                raise PublishedError(f"{path}: missing column {missing[0]!r} (expected {', '.join(COLUMNS)})")
            return [measure_from_row(row, f"{path}: line {line}") for line, row in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PublishedError(f"{path}: cannot read ({exc})") from None


def select(measures: list[Measure], target: str, proposer: str, gpu: str, tp: int) -> list[Measure]:
    """The rows that describe this setting: same target shape, GPU and TP; proposer none, * or this one."""
    return [m for m in measures if same_shape(m.target, target) and m.gpu == gpu and m.tp == tp
            and m.proposer in ("none", "*", proposer)]


def parameter(measures: list[Measure], metric: str) -> Measure | None:
    """A published fit coefficient (role parameter) by metric name, or None."""
    return next((m for m in measures if m.role == "parameter" and m.metric == metric), None)


def group_sets(measures: list[Measure]) -> dict[str, list[Measure]]:
    """Fit and check rows by set name, in file order."""
    out: dict[str, list[Measure]] = {}
    for m in measures:
        if m.role in ("fit", "check"):
            out.setdefault(m.set, []).append(m)
    return out

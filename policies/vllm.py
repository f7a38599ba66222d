"""vLLM's batch-size baselines (smartspec-reference.md section 6.1 controllers iii and iv, section 5.3).

* `vllm-disable`: fixed K, but no speculation while the running batch is at least `threshold`
  (vLLM `speculative_disable_by_batch_size`, PR #4592).
* `vllm-table`: K looked up by batch size in `[[start_bs, end_bs, K], ...]`
  (vLLM `num_speculative_tokens_per_batch_size`, [VLLM-DOC-DSD]), given inline
  (`table=1-4:5;5-16:3;17-1024:0`) or as a JSON file (`table=FILE.json`, what `build-k-table`
  writes). A gap between ranges gets K = 0, as written; a table must reach the engine's
  `max_num_seqs` (`batch_range_problem`: the engine refuses one that stops short, rather than
  run the larger batches at K = 0). Tables are built by goodput with `build-k-table`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from specdec_sim.policies.goodput import running_size

TableRows = list[list[int]]


@dataclass
class VllmDisable:
    """Fixed K, and k = 0 in every step whose running batch size >= threshold."""

    k: int = 3
    threshold: int = 32
    name: str = field(default="vllm-disable", init=False)
    observes = False  # observe() ignores the outcome (policies.base.Policy)

    def __post_init__(self) -> None:
        if not 0 <= self.k <= 1024:
            raise ValueError("vllm-disable: k must be in 0..1024")
        if self.threshold < 1:
            raise ValueError("vllm-disable: threshold must be >= 1")
        self.name = f"vllm-disable:k={self.k},threshold={self.threshold}"

    def propose(self, batch) -> list[int]:
        k = 0 if running_size(batch) >= self.threshold else min(self.k, batch.max_k)
        return [k] * batch.size

    def observe(self, outcome) -> None:
        pass

    def estimated_alpha(self) -> float | None:
        return None


def validate_table(rows) -> TableRows:
    """Check [[start_bs, end_bs, K], ...]: integers, 1 <= start <= end, K >= 0, no overlaps."""
    if not isinstance(rows, list) or not rows:
        raise ValueError("table must be a non-empty list of [start_bs, end_bs, K]")
    clean: TableRows = []
    for row in rows:
        if (not isinstance(row, (list, tuple)) or len(row) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in row)):
            raise ValueError(f"table row {row!r} is not [start_bs, end_bs, K] integers")
        start, end, k = row
        if not (1 <= start <= end) or not 0 <= k <= 1024:
            raise ValueError(f"table row {row!r}: need 1 <= start_bs <= end_bs and 0 <= K <= 1024")
        clean.append([start, end, k])
    clean.sort()
    for (s0, e0, _), (s1, _, _) in zip(clean, clean[1:]):
        if s1 <= e0:
            raise ValueError(f"table ranges overlap at batch size {s1}")
    return clean


def parse_table_text(text: str) -> TableRows:
    """Parse `1-4:5;5-16:3;17-1024:0` (start-end:K, `;`-separated; a bare `8:2` is 8-8:2)."""
    rows = []
    for item in filter(None, (p.strip() for p in text.split(";"))):
        span, colon, k = item.partition(":")
        start, dash, end = span.partition("-")
        try:
            if not colon:
                raise ValueError
            rows.append([int(start), int(end if dash else start), int(k)])
        except ValueError:
            raise ValueError(f"table item {item!r} is not start-end:K") from None
    return validate_table(rows)


def load_table(value: str) -> TableRows:
    """A table given inline (`1-4:5;...`) or as a path to a JSON list [[start_bs, end_bs, K], ...]."""
    text = value.strip()
    if text.endswith(".json") or (":" not in text and text):
        try:
            rows = json.loads(Path(text).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"table file {text!r}: {exc}") from None
        return validate_table(rows)
    return parse_table_text(text)


@dataclass
class VllmTable:
    """K by batch size from a [[start_bs, end_bs, K], ...] table (gaps: K = 0; it must reach max_num_seqs)."""

    table: TableRows
    name: str = field(default="vllm-table", init=False)
    observes = False  # observe() ignores the outcome (policies.base.Policy)

    def __post_init__(self) -> None:
        self.table = validate_table(self.table)
        self._cache: dict[int, int] = {}

    @property
    def max_batch(self) -> int:
        """The largest batch size the table has a K for."""
        return self.table[-1][1]

    def k_for(self, batch_size: int) -> int:
        if batch_size not in self._cache:
            self._cache[batch_size] = next((k for s, e, k in self.table if s <= batch_size <= e), 0)
        return self._cache[batch_size]

    def propose(self, batch) -> list[int]:
        return [min(self.k_for(batch.size), batch.max_k)] * batch.size

    def observe(self, outcome) -> None:
        pass

    def estimated_alpha(self) -> float | None:
        return None


def batch_range_problem(policy, max_num_seqs: int, label: str | None = None) -> str | None:
    """Why `policy` (called `label`, default its name) cannot serve every batch an engine of `max_num_seqs` runs (a
    table that stops short), or None. Only a built-in `VllmTable` declares its range (`max_batch`)."""
    if not isinstance(policy, VllmTable) or policy.max_batch >= max_num_seqs:
        return None
    covered = policy.max_batch
    return (f"policy {label or policy.name!r}: its table stops at batch {covered} but the "
            f"engine runs batches up to max_num_seqs {max_num_seqs}, which would get K = 0; extend its last range "
            f"to {max_num_seqs} (build-k-table --max-batch {max_num_seqs}) or lower --max-num-seqs")


__all__ = ["VllmDisable", "VllmTable", "validate_table", "parse_table_text", "load_table", "batch_range_problem"]

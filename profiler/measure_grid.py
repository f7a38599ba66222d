"""Measurement grid: which (role, batch, query tokens, context) shapes to time.

Target points: batch size x query tokens per sequence (1 = decode, k+1 = verification) x context
length, plus prefill points (one chunk per sequence, at context 0 and at each context length, as
chunked prefill sees them) while batch x chunk stays within `max_prefill_tokens`. Draft points:
batch size x context length with one query token (a sequential draft step).
"""
from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("target", "draft")


class GridError(ValueError):
    """A malformed grid option."""


@dataclass(frozen=True)
class GridPoint:
    role: str  # "target" or "draft"
    kind: str  # "decode", "verify" or "prefill"
    batch: int
    query: int  # new tokens per sequence in this forward
    context: int  # tokens already in the KV cache, per sequence

    @property
    def key(self) -> tuple[str, int, int, int]:
        return (self.role, self.batch, self.query, self.context)

    @property
    def batched_tokens(self) -> int:
        return self.batch * self.query

    @property
    def kv_tokens(self) -> int:
        return self.batch * self.context


@dataclass(frozen=True)
class GridSpec:
    batch_sizes: tuple[int, ...]
    query_tokens: tuple[int, ...]
    context_lengths: tuple[int, ...]
    prefill_chunks: tuple[int, ...] = ()
    max_prefill_tokens: int = 4096
    draft_batch_sizes: tuple[int, ...] = field(default=())  # () = same as batch_sizes

    def as_dict(self) -> dict:
        return {"batch_sizes": list(self.batch_sizes), "query_tokens": list(self.query_tokens),
                "context_lengths": list(self.context_lengths), "prefill_chunks": list(self.prefill_chunks),
                "max_prefill_tokens": self.max_prefill_tokens}


PRESETS: dict[str, GridSpec] = {
    # seconds on CPU with tiny models: what the tests and a smoke run use
    "quick": GridSpec(batch_sizes=(1, 2, 4, 8), query_tokens=(1, 2, 4), context_lengths=(16, 64),
                      prefill_chunks=(32,), max_prefill_tokens=64),
    # a GPU profile in minutes: decode/verify up to k = 7 and batch 64, contexts to 2048
    "standard": GridSpec(batch_sizes=(1, 2, 4, 8, 16, 32, 64), query_tokens=(1, 2, 4, 6, 8),
                         context_lengths=(128, 512, 1024, 2048), prefill_chunks=(128, 512, 2048),
                         max_prefill_tokens=8192),
    # the SmartSpec authors' grid (smartspec-reference.md 1.4): B to 128, k = 0..7, contexts 128..2048
    "full": GridSpec(batch_sizes=(1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128),
                     query_tokens=(1, 2, 3, 4, 5, 6, 7, 8),
                     context_lengths=(128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048),
                     prefill_chunks=(128, 256, 512, 1024, 2048), max_prefill_tokens=16384),
}


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """'1,4,16' -> (1, 4, 16); names the option on a malformed or non-positive entry."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip() != "")
    except ValueError:
        raise GridError(f"{option}: expected comma-separated integers like 1,4,16, got {text!r}") from None
    if not values:
        raise GridError(f"{option}: empty list")
    if any(v <= 0 for v in values) and option != "--context-lengths":
        raise GridError(f"{option}: values must be positive, got {text!r}")
    if any(v < 0 for v in values):
        raise GridError(f"{option}: values must be non-negative, got {text!r}")
    return tuple(sorted(set(values)))


def grid_spec(preset: str, batch_sizes: str | None = None, query_tokens: str | None = None,
              context_lengths: str | None = None, prefill_chunks: str | None = None) -> GridSpec:
    """A preset with any explicit lists replacing its own."""
    if preset not in PRESETS:
        raise GridError(f"--grid: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    chunks = base.prefill_chunks
    if prefill_chunks is not None:
        chunks = () if prefill_chunks.strip() in ("", "0", "none") else parse_int_list(prefill_chunks,
                                                                                       "--prefill-chunks")
    return GridSpec(
        batch_sizes=parse_int_list(batch_sizes, "--batch-sizes") if batch_sizes else base.batch_sizes,
        query_tokens=parse_int_list(query_tokens, "--query-tokens") if query_tokens else base.query_tokens,
        context_lengths=(parse_int_list(context_lengths, "--context-lengths") if context_lengths
                         else base.context_lengths),
        prefill_chunks=chunks, max_prefill_tokens=max(base.max_prefill_tokens, max(chunks, default=0)))


def target_points(spec: GridSpec) -> list[GridPoint]:
    points = [GridPoint("target", "decode" if q == 1 else "verify", b, q, c)
              for c in spec.context_lengths for q in spec.query_tokens for b in spec.batch_sizes]
    seen = {p.key for p in points}
    for chunk in spec.prefill_chunks:
        for c in (0,) + spec.context_lengths:
            for b in spec.batch_sizes:
                p = GridPoint("target", "prefill", b, chunk, c)
                if b * chunk <= spec.max_prefill_tokens and p.key not in seen:
                    points.append(p)
                    seen.add(p.key)
    return points


def draft_points(spec: GridSpec) -> list[GridPoint]:
    sizes = spec.draft_batch_sizes or spec.batch_sizes
    return [GridPoint("draft", "decode", b, 1, c) for c in spec.context_lengths for b in sizes]


def build_grid(spec: GridSpec, with_draft: bool = True) -> list[GridPoint]:
    """All points, target first, small shapes before large within each role."""
    points = sorted(target_points(spec), key=lambda p: (p.batched_tokens * max(1, p.context), p.key))
    if with_draft:
        points += sorted(draft_points(spec), key=lambda p: (p.batch * p.context, p.key))
    return points

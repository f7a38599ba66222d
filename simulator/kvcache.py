"""The KV cache of one replica: the only owner of block counts, with optional prefix caching.

Blocks hold `block_size` tokens. Every change of a request's block count goes through this
class (allocate, grow to hold tokens, give back unused lookahead, free); `Request.blocks` is
written here and nowhere else, and the budget invariant (blocks in use <= total) is checked at
every allocation. Pure Python: no SimPy, no recording; `peak_used` is read by the recorder.

Prefix caching (`PrefixCache`, vLLM's automatic prefix caching at the granularity of a trace's
block hashes, e.g. Mooncake's 512-token `hash_ids`): a finished prefill publishes its full hashed
blocks; a later request whose prompt starts with cached hashes maps those blocks (shared, counted
once) and prefills only the rest, always recomputing at least its last prompt token. A cached
block no request maps stays cached and is evicted least recently used when free blocks run out;
`available` (free + evictable) is what admission may use. `Request.blocks` counts every block a
request maps, `Request.shared_blocks` those of them owned by the cache.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from specdec_sim.simulator.request import Request


class KVCacheOverBudget(AssertionError):
    """An allocation that would use more blocks than the cache has (an engine bug, never user input)."""


class PrefixCache:
    """Cached prompt blocks by hash: how many requests map each, the idle ones in LRU order, hit counts."""

    __slots__ = ("hash_tokens", "blocks_per_hash", "refs", "idle", "query_tokens", "hit_tokens")

    def __init__(self, hash_tokens: int, block_size: int):
        if hash_tokens % block_size:
            raise ValueError(f"prefix caching needs --block-size to divide the trace's {hash_tokens}-token hash "
                             f"blocks (got {block_size})")
        self.hash_tokens = hash_tokens
        self.blocks_per_hash = hash_tokens // block_size
        self.refs: dict[int, int] = {}  # hash -> requests mapping it (0: idle, evictable)
        self.idle: OrderedDict[int, None] = OrderedDict()  # idle hashes, least recently used first
        self.query_tokens = 0
        self.hit_tokens = 0

    def cached_run(self, hashes, prompt_tokens: int) -> int:
        """Leading hashes of a prompt that are cached (full blocks only, leaving >= 1 prompt token to compute)."""
        usable = min(len(hashes), (prompt_tokens - 1) // self.hash_tokens)
        hits = 0
        refs = self.refs
        while hits < usable and int(hashes[hits]) in refs:
            hits += 1
        return hits

    @property
    def idle_blocks(self) -> int:
        return len(self.idle) * self.blocks_per_hash


class KVCache:
    """Free and used block counts of one replica, and the blocks each request holds."""

    __slots__ = ("block_size", "total", "free", "peak_used", "prefix")

    def __init__(self, total_blocks: int, block_size: int, prefix: PrefixCache | None = None):
        self.block_size = block_size
        self.total = total_blocks
        self.free = total_blocks
        self.peak_used = 0
        self.prefix = prefix

    @property
    def used(self) -> int:
        return self.total - self.free

    @property
    def available(self) -> int:
        """Blocks an allocation may take: free ones plus cached blocks no request maps (evicted on demand)."""
        return self.free if self.prefix is None else self.free + self.prefix.idle_blocks

    def blocks_for(self, tokens: int) -> int:
        """Blocks needed to hold `tokens` tokens."""
        return -(-tokens // self.block_size)

    def extra_for(self, req: Request, tokens: int) -> int:
        """Blocks `req` must add to hold `tokens` tokens (<= 0 if it already holds enough)."""
        return -(-tokens // self.block_size) - req.blocks

    def lookahead_growth(self, reqs: Sequence[Request], ks: Sequence[int]) -> tuple[list[tuple[Request, int]], int]:
        """The requests that must add blocks to hold their context plus k+1 new tokens, each with the blocks
        it adds, and their total."""
        bs = self.block_size  # (context + k + bs) // bs = ceil((context + k + 1) / bs)
        growing = [(req, extra) for req, k in zip(reqs, ks)
                   if (extra := (req.context_tokens + k + bs) // bs - req.blocks) > 0]
        total = 0
        for _, extra in growing:
            total += extra
        return growing, total

    def grow(self, req: Request, count: int) -> None:
        """Give `req` `count` more blocks."""
        self._take(count)
        req.blocks += count

    def grow_many(self, growing: Sequence[tuple[Request, int]], total: int) -> None:
        """Give each request its extra blocks (`growing`: (request, blocks) pairs whose blocks sum to `total`)."""
        self._take(total)
        for req, extra in growing:
            req.blocks += extra

    def _take(self, count: int) -> None:
        if count > self.free and self.prefix is not None:
            self._evict(count - self.free)
        if count > self.free:
            raise KVCacheOverBudget(f"KV cache over budget: {self.used + count} > {self.total} blocks")
        self.free -= count
        used = self.total - self.free  # cached blocks no request maps count as free, as vLLM's usage does
        if self.prefix is not None:
            used -= self.prefix.idle_blocks
        if used > self.peak_used:
            self.peak_used = used

    def trim(self, reqs: Sequence[Request]) -> None:
        """Give back the blocks beyond each request's context (lookahead slots rejected drafts left unused)."""
        bs = self.block_size
        freed = 0
        for req in reqs:
            keep = -(-req.context_tokens // bs)
            if req.blocks > keep:
                freed += req.blocks - keep
                req.blocks = keep
        self.free += freed

    def release(self, req: Request) -> None:
        """Free every block `req` holds (finish or preemption); cached blocks it mapped stay cached."""
        self.free += req.blocks - req.shared_blocks
        req.blocks = 0
        if req.cached_hashes:
            self._unmap(req)

    # ---- prefix caching ---------------------------------------------------------------------
    def map_cached(self, req: Request, hits: int) -> None:
        """`req` maps the first `hits` of its hashed blocks from the cache (they must be cached)."""
        prefix = self.prefix
        per = prefix.blocks_per_hash
        for h in req.hashes[:hits]:
            h = int(h)
            if prefix.refs[h] == 0:
                del prefix.idle[h]
            prefix.refs[h] += 1
            req.cached_hashes.append(h)
        req.blocks += hits * per
        req.shared_blocks += hits * per

    def unmap_cached(self, req: Request) -> None:
        """Undo `map_cached` before `req` computed anything (its admission did not go through)."""
        req.blocks -= req.shared_blocks
        self._unmap(req)

    def publish(self, req: Request) -> None:
        """After `req`'s prefill: its full hashed prompt blocks not yet cached become cached blocks it maps."""
        prefix = self.prefix
        per = prefix.blocks_per_hash
        full = min(len(req.hashes), req.prompt_tokens // prefix.hash_tokens)
        for j in range(len(req.cached_hashes), full):
            h = int(req.hashes[j])
            if h in prefix.refs:  # computed by another request meanwhile: keep this copy private
                break
            prefix.refs[h] = 1
            req.cached_hashes.append(h)
            req.shared_blocks += per

    def _unmap(self, req: Request) -> None:
        prefix = self.prefix
        for h in req.cached_hashes:
            left = prefix.refs[h] - 1
            prefix.refs[h] = left
            if left == 0:
                prefix.idle[h] = None  # most recently used last
        req.cached_hashes = []
        req.shared_blocks = 0

    def _evict(self, blocks: int) -> None:
        """Evict idle cached blocks, least recently used first, until `blocks` more are free (or none is idle)."""
        prefix = self.prefix
        while blocks > 0 and prefix.idle:
            h, _ = prefix.idle.popitem(last=False)
            del prefix.refs[h]
            self.free += prefix.blocks_per_hash
            blocks -= prefix.blocks_per_hash


__all__ = ["KVCache", "KVCacheOverBudget"]

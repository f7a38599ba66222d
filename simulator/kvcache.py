"""The KV cache of one replica: the only owner of block counts.

Blocks hold `block_size` tokens. Every change of a request's block count goes through this
class (allocate, grow to hold tokens, give back unused lookahead, free); `Request.blocks` is
written here and nowhere else, and the budget invariant (blocks in use <= total) is checked at
every allocation. Pure Python: no SimPy, no recording; `peak_used` is read by the recorder.
"""
from __future__ import annotations

from typing import Sequence

from specdec_sim.simulator.request import Request


class KVCacheOverBudget(AssertionError):
    """An allocation that would use more blocks than the cache has (an engine bug, never user input)."""


class KVCache:
    """Free and used block counts of one replica, and the blocks each request holds."""

    __slots__ = ("block_size", "total", "free", "peak_used")

    def __init__(self, total_blocks: int, block_size: int):
        self.block_size = block_size
        self.total = total_blocks
        self.free = total_blocks
        self.peak_used = 0

    @property
    def used(self) -> int:
        return self.total - self.free

    def blocks_for(self, tokens: int) -> int:
        """Blocks needed to hold `tokens` tokens."""
        return -(-tokens // self.block_size)

    def extra_for(self, req: Request, tokens: int) -> int:
        """Blocks `req` must add to hold `tokens` tokens (<= 0 if it already holds enough)."""
        return -(-tokens // self.block_size) - req.blocks

    def lookahead_extras(self, reqs: Sequence[Request], ks: Sequence[int]) -> list[int]:
        """Per request, the blocks to add so it holds its context plus k+1 new tokens (<= 0: none)."""
        bs = self.block_size
        return [-(-(req.context_tokens + k + 1) // bs) - req.blocks for req, k in zip(reqs, ks)]

    def grow(self, req: Request, count: int) -> None:
        """Give `req` `count` more blocks."""
        self._take(count)
        req.blocks += count

    def grow_many(self, reqs: Sequence[Request], extras: Sequence[int], total: int) -> None:
        """Give each request its extra blocks (positive entries of `extras`, summing to `total`)."""
        self._take(total)
        for req, extra in zip(reqs, extras):
            if extra > 0:
                req.blocks += extra

    def _take(self, count: int) -> None:
        if count > self.free:
            raise KVCacheOverBudget(f"KV cache over budget: {self.used + count} > {self.total} blocks")
        self.free -= count
        used = self.total - self.free
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
        """Free every block `req` holds (finish or preemption)."""
        self.free += req.blocks
        req.blocks = 0


__all__ = ["KVCache", "KVCacheOverBudget"]

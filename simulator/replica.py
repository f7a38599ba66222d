"""One serving replica as a SimPy process: vLLM-like continuous batching with speculative decoding.

Each step: the scheduler forms a batch (FCFS admission under max_num_seqs, the token budget and
the KV-cache block budget; recompute preemption when blocks run out), the policy picks a
proposal length per decoding request, the cost model prices the step, the process waits that
long on the one environment clock, then acceptance is drawn and tokens are emitted.
"""
from __future__ import annotations

import math
import random
from collections import deque
from typing import TYPE_CHECKING, Callable

from specdec_sim.policies.base import DecodeBatch, Policy, StepOutcome
from specdec_sim.simulator.acceptance import accepted_chain, accepted_positions
from specdec_sim.costmodel import CostModel, StepShape
from specdec_sim.simulator.request import Request

if TYPE_CHECKING:
    from specdec_sim.simulator.engine import Recorder


class Replica:
    """Scheduler state and the step loop of one replica."""

    def __init__(self, env, index: int, cost: CostModel, policy: Policy, config, num_blocks: int,
                 recorder: "Recorder", rng: random.Random, position_rates: tuple[float, ...],
                 tree_sampler: Callable | None):
        self.env = env
        self.index = index
        self.cost = cost
        self.policy = policy
        self.cfg = config
        self.block_size = config.block_size
        self.total_blocks = num_blocks
        self.free_blocks = num_blocks
        self.recorder = recorder
        self.rng = rng
        self.position_rates = position_rates
        self.tree_sampler = tree_sampler
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # admitted, in arrival order; prefilling or decoding
        self.decode_steps = 0
        self.wakeup = env.event()
        self.process = env.process(self.run())

    # ---- admission -------------------------------------------------------------------------
    def enqueue(self, req: Request) -> None:
        req.replica = self.index
        self.waiting.append(req)
        if not self.wakeup.triggered:
            self.wakeup.succeed()

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _reject_impossible(self, req: Request) -> bool:
        """Fail a request that can never run here, instead of letting it wait forever."""
        need = self.blocks_for(req.prompt_tokens + req.output_tokens + self.cfg.max_k + 1)
        if need > self.total_blocks:
            self.recorder.fail(req, self.env.now, "needs more KV-cache blocks than the replica has")
            return True
        if not self.cfg.chunked_prefill and req.prefill_target > self.cfg.max_num_batched_tokens:
            self.recorder.fail(req, self.env.now, "prompt longer than max_num_batched_tokens without chunked prefill")
            return True
        return False

    def _admit(self, token_budget: int) -> list[tuple[Request, int]]:
        """FCFS: move waiting requests into the running set while seats, tokens and blocks allow."""
        chunks: list[tuple[Request, int]] = []
        while self.waiting and len(self.running) < self.cfg.max_num_seqs and token_budget > 0:
            req = self.waiting[0]
            if self._reject_impossible(req):
                self.waiting.popleft()
                continue
            target = req.prefill_target
            chunk = target if not self.cfg.chunked_prefill else min(target, token_budget)
            if chunk > token_budget:
                break
            need = self._chunk_blocks(req, chunk)
            if need > self.free_blocks:
                break
            self.waiting.popleft()
            self._take_blocks(req, need)
            self.running.append(req)
            chunks.append((req, chunk))
            token_budget -= chunk
        return chunks

    def _chunk_blocks(self, req: Request, chunk: int) -> int:
        """Blocks to add for a prefill chunk, plus the slot of the token the last chunk produces."""
        end = req.prefill_done + chunk
        return self.blocks_for(end + (1 if end >= req.prefill_target else 0)) - req.blocks

    def outstanding_tokens(self) -> int:
        """Tokens still to compute on this replica (prefill left + output left): the least-tokens router's load."""
        return (sum(r.outstanding_tokens for r in self.running)
                + sum(r.outstanding_tokens for r in self.waiting))

    def _take_blocks(self, req: Request, count: int) -> None:
        self.free_blocks -= count
        req.blocks += count
        self.recorder.kv_used(self.total_blocks - self.free_blocks, self.total_blocks)

    def _release(self, req: Request) -> None:
        self.free_blocks += req.blocks
        req.blocks = 0

    def _preempt_last(self) -> Request:
        """Recompute preemption of the most recently admitted request: blocks freed, back to the queue front."""
        victim = self.running.pop()
        self._release(victim)
        victim.prefill_done = 0
        victim.context_tokens = 0
        victim.is_decoding = False
        victim.preemptions += 1
        self.waiting.appendleft(victim)
        return victim

    # ---- the step loop ---------------------------------------------------------------------
    def run(self):
        env = self.env
        while True:
            if not self.running and not self.waiting:
                self.wakeup = env.event()
                yield self.wakeup
                continue
            decoding = [r for r in self.running if r.is_decoding]
            if not self.cfg.chunked_prefill:
                prefills = self._admit(self.cfg.max_num_batched_tokens)
                if prefills:  # V0: a step with prefill carries only prefill
                    yield from self._step([], [], prefills)
                    continue
                ks = self._propose(decoding, [])
            elif self.cfg.spec_in_prefill_steps:  # V1: decodes and their drafts first, chunks fill the rest
                ks = self._fit_token_budget(self._propose(decoding, [], self._pending_prefill(len(decoding))))
                prefills = self._schedule_chunks(self.cfg.max_num_batched_tokens - sum(ks) - len(ks))
            else:
                prefills = self._schedule_chunks(self.cfg.max_num_batched_tokens - len(decoding))
                ks = self._propose(decoding, prefills)
            if not decoding and not prefills:
                if self.running:  # partial prefills stuck for KV blocks: recompute-preempt the newest
                    self.recorder.preempted(self._preempt_last())
                elif self.waiting:  # queue head cannot be admitted into an empty replica: it never will
                    self.recorder.fail(self.waiting.popleft(), env.now, "could not be admitted with an empty batch")
                continue
            decoding, ks, preempted = self._reserve_lookahead(decoding, ks)
            if preempted:
                prefills = [(r, c) for r, c in prefills if r not in preempted]
            yield from self._step(decoding, ks, prefills)

    def _schedule_chunks(self, budget: int) -> list[tuple[Request, int]]:
        prefills = self._continue_chunks(budget)
        return prefills + self._admit(budget - sum(c for _, c in prefills))

    def _pending_prefill(self, num_decoding: int) -> int:
        """Prefill tokens likely to share the step (for pricing mixed batches before the chunks are cut)."""
        pending = sum(r.prefill_target - r.prefill_done for r in self.running if not r.is_decoding)
        pending += sum(r.prefill_target for r in self.waiting)
        return min(pending, max(0, self.cfg.max_num_batched_tokens - num_decoding))

    def _fit_token_budget(self, ks: list[int]) -> list[int]:
        """Trim the longest proposals until decodes and drafts fit max_num_batched_tokens."""
        excess = sum(ks) + len(ks) - self.cfg.max_num_batched_tokens
        while excess > 0 and any(ks):
            i = max(range(len(ks)), key=ks.__getitem__)
            ks[i] -= 1
            excess -= 1
        return ks

    def _continue_chunks(self, budget: int) -> list[tuple[Request, int]]:
        chunks = []
        for req in self.running:
            if budget <= 0:
                break
            if not req.is_decoding:
                chunk = min(req.prefill_target - req.prefill_done, budget)
                need = self._chunk_blocks(req, chunk)
                if need > self.free_blocks:
                    break
                self._take_blocks(req, need)
                chunks.append((req, chunk))
                budget -= chunk
        return chunks

    def _propose(self, decoding: list[Request], prefills: list, prefill_hint: int = 0) -> list[int]:
        if not decoding:
            return []
        if prefills and not self.cfg.spec_in_prefill_steps:
            return [0] * len(decoding)
        if self.cfg.style == "ngram":
            p = self.cfg.ngram_match_prob
            for req in decoding:
                req.ngram_match = self.rng.random() < p
        batch = DecodeBatch(
            requests=decoding, cost=self.cost, step_index=self.decode_steps,
            kv_tokens=sum(r.context_tokens for r in decoding), max_k=self.cfg.max_k, style=self.cfg.style,
            prefill_tokens=sum(c for _, c in prefills) or prefill_hint, num_prefill=len(prefills),
            queue_len=len(self.waiting),
            free_kv_tokens=self.free_blocks * self.block_size)
        ks = self.policy.propose(batch)
        max_k, ngram = self.cfg.max_k, self.cfg.style == "ngram"
        top = max(ks)
        if not ngram and top <= max_k and min(ks) >= 0 and top < min(r.tokens_left for r in decoding):
            return list(ks)  # nothing to cap: the common case
        out = []
        for req, k in zip(decoding, ks):
            if k > max_k:
                k = max_k
            if k >= req.tokens_left:
                k = req.tokens_left - 1
            if k < 0 or (ngram and not req.ngram_match):
                k = 0
            out.append(k)
        return out

    def _reserve_lookahead(self, decoding: list[Request], ks: list[int]):
        """Reserve KV slots for k+1 new tokens per decoding request, preempting the newest requests if short."""
        preempted: list[Request] = []
        bs = self.block_size
        while True:
            extras = [-(-(req.context_tokens + k + 1) // bs) - req.blocks for req, k in zip(decoding, ks)]
            need = sum(e for e in extras if e > 0)
            if need <= self.free_blocks:
                break
            victim = self._preempt_last()
            if victim in decoding:
                i = decoding.index(victim)
                decoding = decoding[:i] + decoding[i + 1:]
                ks = ks[:i] + ks[i + 1:]
            self.recorder.preempted(victim)
            preempted.append(victim)
        if need:
            for req, extra in zip(decoding, extras):
                if extra > 0:
                    req.blocks += extra
            self.free_blocks -= need
            self.recorder.kv_used(self.total_blocks - self.free_blocks, self.total_blocks)
        return decoding, ks, preempted

    def _shape(self, decoding: list[Request], ks: list[int], prefills: list[tuple[Request, int]]) -> StepShape:
        max_k = max(ks, default=0)
        tree = self.cfg.style == "tree"
        if not max_k:
            proposing, sizes = 0, ()
        elif min(ks) == max_k:  # uniform proposal: every request drafts at every draft step
            proposing = len(ks)
            sizes = (proposing,) if tree else (proposing,) * max_k
        else:
            counts = [0] * (max_k + 1)
            for k in ks:
                counts[k] += 1
            proposing = len(ks) - counts[0]
            if tree:  # one pass of the tree heads drafts every node
                sizes = (proposing,)
            else:
                sizes_list, running = [], 0
                for j in range(max_k, 0, -1):
                    running += counts[j]
                    sizes_list.append(running)
                sizes = tuple(reversed(sizes_list))
        kv = sum(r.context_tokens for r in decoding)
        prefill_tokens, attn2 = 0, 0.0
        for req, chunk in prefills:
            kv += req.prefill_done
            prefill_tokens += chunk
            attn2 += chunk * (req.prefill_done + chunk / 2.0)
        return StepShape(num_decode=len(decoding), num_proposing=proposing, verify_tokens=sum(ks) + len(ks),
                         prefill_tokens=prefill_tokens, num_prefill=len(prefills), kv_tokens=kv,
                         max_k=1 if (max_k and tree) else max_k, draft_batch_sizes=sizes,
                         prefill_attention_tokens2=attn2)

    def _step(self, decoding: list[Request], ks: list[int], prefills: list[tuple[Request, int]]):
        shape = self._shape(decoding, ks, prefills)
        timing = self.cost.step_time(shape)
        start = self.env.now
        yield self.env.timeout(timing.total_s)
        now = self.env.now
        accepted = self._draw_acceptance(decoding, ks)
        emitted_total, accepted_total = self._emit_decodes(decoding, ks, accepted, now)
        emitted_total += self._finish_prefill_chunks(prefills, now)
        if decoding:
            self.policy.observe(StepOutcome(decoding, ks, accepted, timing.total_s, self.decode_steps))
            self.decode_steps += 1
        self.recorder.step(self, start, timing, shape, accepted_total, emitted_total)

    def _draw_acceptance(self, decoding: list[Request], ks: list[int]) -> list[int]:
        mode, rng = self.cfg.acceptance_mode, self.rng
        if self.cfg.style == "tree" and self.tree_sampler is not None:
            return [self.tree_sampler(r.alpha, k, rng) if k else 0 for r, k in zip(decoding, ks)]
        if mode == "per-position" and self.position_rates:
            return [accepted_positions(self.position_rates, k, rng) if k else 0 for k in ks]
        if mode == "batch":
            u = 1.0 - rng.random()
            return [accepted_chain(r.alpha, k, u) for r, k in zip(decoding, ks)]
        rand, log = rng.random, math.log
        # inversion: P(accepted >= j) = alpha^j, the law of sequential Bernoulli draws stopping at a rejection
        return [(j if (j := int(log(1.0 - rand()) / r.log_alpha)) < k else k) if k and r.alpha > 0.0 else 0
                for r, k in zip(decoding, ks)]

    def _emit_decodes(self, decoding: list[Request], ks: list[int], accepted: list[int],
                      now: float) -> tuple[int, int]:
        """Apply a decode step's outcome; returns (tokens emitted, drafts accepted)."""
        total = 0
        accepted_total = 0
        finished = []
        gaps: dict[float, int] = {}  # ITL gaps grouped by the time each request last emitted
        bs = self.block_size
        freed = 0
        for req, k, acc in zip(decoding, ks, accepted):
            emitted = acc + 1
            left = req.tokens_left
            if emitted > left:
                emitted = left
            req.drafted_tokens += k
            req.accepted_tokens += acc
            accepted_total += acc
            req.generated += emitted
            req.tokens_left = left - emitted
            ctx = req.context_tokens + emitted
            req.context_tokens = ctx
            req.num_steps += 1
            last = req.last_token_s
            gaps[last] = gaps.get(last, 0) + 1
            req.last_token_s = now
            total += emitted
            keep = -(-ctx // bs)  # give back lookahead slots that rejected drafts did not use
            if req.blocks > keep:
                freed += req.blocks - keep
                req.blocks = keep
            if left == emitted:
                finished.append(req)
        self.free_blocks += freed
        for last, count in gaps.items():
            self.recorder.itl(now - last, count)
        for req in finished:
            self._finish(req, now)
        return total, accepted_total

    def _finish_prefill_chunks(self, prefills: list[tuple[Request, int]], now: float) -> int:
        total = 0
        for req, chunk in prefills:
            req.prefill_done += chunk
            req.context_tokens = req.prefill_done
            req.num_steps += 1
            if req.prefill_done < req.prefill_target:
                continue
            # the prefill's forward pass yields the next token
            req.generated += 1
            req.tokens_left -= 1
            req.context_tokens += 1
            req.is_decoding = True
            total += 1
            if req.first_token_s < 0:
                req.first_token_s = now
            else:
                self.recorder.itl(now - req.last_token_s)
            req.last_token_s = now
            if req.tokens_left == 0:
                self._finish(req, now)
        return total

    def _finish(self, req: Request, now: float) -> None:
        self.running.remove(req)
        self._release(req)
        self.recorder.finish(req, now)

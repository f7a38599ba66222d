"""vLLM-like continuous-batching scheduler of one replica: pure Python, no SimPy, no recording.

`Scheduler.plan(propose)` forms the next step: FCFS admission under `max_num_seqs`, the token
budget and the KV cache; prefill chunks; the proposal lengths (asked of `propose`, a callback
that wraps the policy); k+1 lookahead slots reserved per decoding request, with recompute
preemption of the newest request when blocks run out. `Scheduler.complete(plan, accepted, now)`
applies the step's outcome: tokens emitted, prefill chunks done, unused lookahead given back,
finished requests released. Both return values (`StepPlan`, `StepResult`) that the replica
hands on; requests that can never run are returned as failures with a reason.

Modes (simulator/engine_mode.py picks them): V0 (as SmartSpec's V0 engine): a step with prefill
carries only prefill and does not speculate. `chunked_prefill`: decodes first, prefill chunks fill
the token budget, no speculation in steps with a chunk; with `spec_in_prefill_steps` too, decodes
and their drafts come first and chunks fill what is left (vLLM V1). Admission keeps a watermark
of free blocks (vLLM's 1 %).
"""
from __future__ import annotations

from collections import deque
from operator import attrgetter
from typing import Callable

from specdec_sim.simulator.kvcache import KVCache
from specdec_sim.simulator.request import Request

# propose(decoding requests, their summed context tokens, prefill tokens sharing the step, prefill chunks)
# -> one k per request
ProposeFn = Callable[[list[Request], int, int, int], list[int]]
_context_tokens = attrgetter("context_tokens")


class StepPlan:
    """One step to run: decoding requests with their proposal lengths and summed context, prefill chunks,
    and what scheduling it did on the way (requests that failed, preemptions). A plain value."""

    __slots__ = ("decoding", "ks", "kv_tokens", "prefills", "failed", "preemptions")

    def __init__(self) -> None:
        self.decoding: list[Request] = []
        self.ks: list[int] = []
        self.kv_tokens = 0  # context tokens of `decoding` (what the step's attention reads for them)
        self.prefills: list[tuple[Request, int]] = []  # (request, chunk tokens)
        self.failed: list[tuple[Request, str]] = []
        self.preemptions = 0

    @property
    def empty(self) -> bool:
        return not self.decoding and not self.prefills


class StepResult:
    """What a step produced: tokens, accepted drafts, ITL gaps (seconds, count), the requests whose first token it
    emitted (`started`) and the finished ones."""

    __slots__ = ("emitted", "accepted", "itl_gaps", "started", "finished")

    def __init__(self) -> None:
        self.emitted = 0
        self.accepted = 0
        self.itl_gaps: list[tuple[float, int]] = []
        self.started: list[Request] = []
        self.finished: list[Request] = []


class Scheduler:
    """Waiting queue, running batch and KV cache of one replica."""

    def __init__(self, kv: KVCache, max_num_seqs: int, max_num_batched_tokens: int, chunked_prefill: bool,
                 spec_in_prefill_steps: bool, max_k: int, watermark_blocks: int = 0):
        """`watermark_blocks`: blocks admission leaves free (vLLM's watermark, 1 % of the cache by default), so
        a request admitted now is not preempted by the next step's growth."""
        self.kv = kv
        self.watermark = watermark_blocks
        self.prefill_tokens_computed = 0  # prompt (and recomputed) tokens this replica's prefills computed
        self.max_num_seqs = max_num_seqs
        self.token_budget = max_num_batched_tokens
        self.chunked_prefill = chunked_prefill
        self.spec_in_prefill_steps = spec_in_prefill_steps
        self.max_k = max_k
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # admitted, in arrival order; prefilling or decoding

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting

    def outstanding_tokens(self) -> int:
        """Tokens still to compute here (prefill left + output left): the least-tokens router's load."""
        return (sum(r.outstanding_tokens for r in self.running)
                + sum(r.outstanding_tokens for r in self.waiting))

    # ---- forming a step ----------------------------------------------------------------------
    def plan(self, propose: ProposeFn) -> StepPlan:
        """The next step (possibly empty, after a preemption or a failure: plan again)."""
        plan = StepPlan()
        decoding = [r for r in self.running if r.is_decoding]
        kv_tokens = sum(map(_context_tokens, decoding))
        budget = self.token_budget
        if not self.chunked_prefill:
            prefills = self._admit(budget, plan)
            if prefills:  # V0: a step with prefill carries only prefill
                plan.prefills = prefills
                return plan
            ks = propose(decoding, kv_tokens, 0, 0) if decoding else []
        elif self.spec_in_prefill_steps:  # V1: decodes and their drafts first, chunks fill the rest
            drafts = 0
            if decoding:
                ks = propose(decoding, kv_tokens, self._pending_prefill(len(decoding)), 0)
                drafts = sum(ks)
                if drafts + len(ks) > budget:
                    ks = self._fit_token_budget(ks)
                    drafts = sum(ks)
            else:
                ks = []
            prefills = self._schedule_chunks(budget - drafts - len(ks), plan, len(decoding))
        else:
            prefills = self._schedule_chunks(budget - len(decoding), plan, len(decoding))
            ks = ([0] * len(decoding) if prefills else propose(decoding, kv_tokens, 0, 0)) if decoding else []
        if not decoding and not prefills:
            if self.running:  # partial prefills stuck for KV blocks: recompute-preempt the newest
                self._preempt_last()
                plan.preemptions += 1
            elif self.waiting:  # queue head cannot be admitted into an empty replica: it never will
                plan.failed.append((self.waiting.popleft(), "could not be admitted with an empty batch"))
            return plan
        decoding, ks, preempted = self._reserve_lookahead(decoding, ks)
        if preempted:
            plan.preemptions += len(preempted)
            prefills = [(r, c) for r, c in prefills if r not in preempted]
            kv_tokens = sum(map(_context_tokens, decoding))
        plan.decoding, plan.ks, plan.kv_tokens, plan.prefills = decoding, ks, kv_tokens, prefills
        return plan

    def _impossible(self, req: Request) -> str | None:
        """Why a request can never run here, or None."""
        if self.kv.blocks_for(req.prompt_tokens + req.output_tokens + self.max_k + 1) > self.kv.total - self.watermark:
            return "needs more KV-cache blocks than the replica has"
        if not self.chunked_prefill and req.prefill_target > self.token_budget:
            return "prompt longer than max_num_batched_tokens without chunked prefill"
        return None

    def _admit(self, token_budget: int, plan: StepPlan) -> list[tuple[Request, int]]:
        """FCFS: move waiting requests into the running set while seats, tokens and blocks allow."""
        chunks: list[tuple[Request, int]] = []
        while self.waiting and len(self.running) < self.max_num_seqs and token_budget > 0:
            req = self.waiting[0]
            reason = self._impossible(req)
            if reason is not None:
                plan.failed.append((self.waiting.popleft(), reason))
                continue
            hits = self._map_cached_prefix(req)
            remaining = req.prefill_target - req.prefill_done
            chunk = remaining if not self.chunked_prefill else min(remaining, token_budget)
            need = self._chunk_blocks(req, chunk) if chunk <= token_budget else 0
            if chunk > token_budget or need > self.kv.available - self.watermark:
                if hits:
                    self._unmap_cached_prefix(req)
                break
            if hits or (self.kv.prefix is not None and req.hashes is not None):
                self.kv.prefix.query_tokens += req.prompt_tokens
                self.kv.prefix.hit_tokens += req.prefill_done
            self.waiting.popleft()
            self.kv.grow(req, need)
            self.running.append(req)
            chunks.append((req, chunk))
            token_budget -= chunk
        return chunks

    def _map_cached_prefix(self, req: Request) -> int:
        """Map the cached blocks of `req`'s prompt prefix (prefix caching) and skip computing them; the hits."""
        prefix = self.kv.prefix
        if prefix is None or req.hashes is None:
            return 0
        hits = prefix.cached_run(req.hashes, req.prompt_tokens)
        if hits:
            self.kv.map_cached(req, hits)
            req.prefill_done = req.context_tokens = hits * prefix.hash_tokens
        return hits

    def _unmap_cached_prefix(self, req: Request) -> None:
        self.kv.unmap_cached(req)
        req.prefill_done = req.context_tokens = 0

    def _chunk_blocks(self, req: Request, chunk: int) -> int:
        """Blocks to add for a prefill chunk, plus the slot of the token the last chunk produces."""
        end = req.prefill_done + chunk
        return self.kv.extra_for(req, end + (1 if end >= req.prefill_target else 0))

    def _schedule_chunks(self, budget: int, plan: StepPlan, num_decoding: int) -> list[tuple[Request, int]]:
        """Chunks of admitted requests still prefilling (none to look for when every running one decodes), then
        new admissions, in the budget left."""
        prefills = self._continue_chunks(budget) if len(self.running) > num_decoding else []
        if not self.waiting:
            return prefills
        return prefills + self._admit(budget - sum(c for _, c in prefills), plan)

    def _continue_chunks(self, budget: int) -> list[tuple[Request, int]]:
        chunks = []
        for req in self.running:
            if budget <= 0:
                break
            if not req.is_decoding:
                chunk = min(req.prefill_target - req.prefill_done, budget)
                need = self._chunk_blocks(req, chunk)
                if need > self.kv.available:
                    break
                self.kv.grow(req, need)
                chunks.append((req, chunk))
                budget -= chunk
        return chunks

    def _pending_prefill(self, num_decoding: int) -> int:
        """Prefill tokens likely to share the step (for pricing mixed batches before the chunks are cut)."""
        cap = self.token_budget - num_decoding
        if cap <= 0:
            return 0
        pending = 0
        if len(self.running) > num_decoding:  # some admitted requests are still prefilling
            for r in self.running:
                if not r.is_decoding:
                    pending += r.prefill_target - r.prefill_done
        for r in self.waiting:  # stops as soon as the budget is covered (the queue may be long)
            if pending >= cap:
                break
            pending += r.prefill_target
        return min(pending, cap)

    def _fit_token_budget(self, ks: list[int]) -> list[int]:
        """Trim the longest proposals until decodes and drafts fit the token budget."""
        excess = sum(ks) + len(ks) - self.token_budget
        while excess > 0 and any(ks):
            i = max(range(len(ks)), key=ks.__getitem__)
            ks[i] -= 1
            excess -= 1
        return ks

    def _preempt_last(self) -> Request:
        """Recompute preemption of the most recently admitted request: blocks freed, back to the queue front."""
        victim = self.running.pop()
        self.kv.release(victim)
        victim.prefill_done = 0
        victim.context_tokens = 0
        victim.is_decoding = False
        victim.preemptions += 1
        self.waiting.appendleft(victim)
        return victim

    def _reserve_lookahead(self, decoding: list[Request], ks: list[int]):
        """Reserve KV slots for k+1 new tokens per decoding request, preempting the newest requests if short."""
        preempted: list[Request] = []
        kv = self.kv
        while True:
            growing, need = kv.lookahead_growth(decoding, ks)
            if need <= kv.available:
                break
            victim = self._preempt_last()
            if victim in decoding:
                i = decoding.index(victim)
                decoding = decoding[:i] + decoding[i + 1:]
                ks = ks[:i] + ks[i + 1:]
            preempted.append(victim)
        if need:
            kv.grow_many(growing, need)
        return decoding, ks, preempted

    # ---- applying a step's outcome -------------------------------------------------------------
    def complete(self, plan: StepPlan, accepted: list[int], now: float) -> StepResult:
        """Emit the step's tokens at time `now`; finished requests leave the batch."""
        result = StepResult()
        if plan.decoding:
            self._emit_decodes(plan.decoding, accepted, now, result, any(plan.ks))
        if plan.prefills:
            self._finish_prefill_chunks(plan.prefills, now, result)
        return result

    def _emit_decodes(self, decoding: list[Request], accepted: list[int], now: float, result: StepResult,
                      speculated: bool) -> None:
        accepted_total = sum(accepted)
        total = accepted_total + len(decoding)  # less what outputs ending inside the drafts cannot use
        finished = []
        # ITL gaps grouped by the time each request last emitted: usually the previous step's end for all
        common_last = decoding[0].last_token_s
        common = 0
        other_gaps: dict[float, int] = {}
        for req, acc in zip(decoding, accepted):
            emitted = acc + 1
            left = req.tokens_left
            if emitted >= left:  # the output ends in this step
                total -= emitted - left
                emitted = left
                finished.append(req)
            req.generated += emitted
            req.tokens_left = left - emitted
            req.budget_left -= emitted
            req.context_tokens += emitted
            req.num_steps += 1
            last = req.last_token_s
            if last == common_last:
                common += 1
            else:
                other_gaps[last] = other_gaps.get(last, 0) + 1
            req.last_token_s = now
        if speculated:  # give back lookahead slots that rejected drafts did not use (none without drafts)
            self.kv.trim(decoding)
        result.itl_gaps = [(now - common_last, common)]
        if other_gaps:
            result.itl_gaps += [(now - last, count) for last, count in other_gaps.items()]
        for req in finished:
            self._finish(req, result)
        result.emitted += total
        result.accepted += accepted_total

    def _finish_prefill_chunks(self, prefills: list[tuple[Request, int]], now: float, result: StepResult) -> None:
        for req, chunk in prefills:
            self.prefill_tokens_computed += chunk
            req.prefill_done += chunk
            req.context_tokens = req.prefill_done
            req.num_steps += 1
            if req.prefill_done < req.prefill_target:
                continue
            if self.kv.prefix is not None and req.hashes is not None:
                self.kv.publish(req)  # its full prompt blocks become cached
            # the prefill's forward pass yields the next token
            req.generated += 1
            req.tokens_left -= 1
            req.budget_left -= 1
            req.context_tokens += 1
            req.is_decoding = True
            result.emitted += 1
            if req.first_token_s < 0:
                req.first_token_s = now
                result.started.append(req)
            else:
                result.itl_gaps.append((now - req.last_token_s, 1))
            req.last_token_s = now
            if req.tokens_left == 0:
                self._finish(req, result)

    def _finish(self, req: Request, result: StepResult) -> None:
        self.running.remove(req)
        self.kv.release(req)
        result.finished.append(req)


__all__ = ["Scheduler", "StepPlan", "StepResult", "ProposeFn"]

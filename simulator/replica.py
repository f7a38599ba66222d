"""One serving replica as a SimPy process: the step loop that drives the scheduler on the one clock.

Each step: the scheduler forms a batch (asking the policy for proposal lengths through
`propose`), the cost model prices it, the process waits that long on the environment clock,
acceptance is drawn, the scheduler applies the outcome, the policy observes it, and the
recorder receives a plain `StepRecord`. The replica owns no scheduling or block logic itself.
"""
from __future__ import annotations

from operator import attrgetter
from typing import Callable

from specdec_sim.costmodel import NO_PREFILL, CostModel, StepTime, prefill_terms, step_shape
from specdec_sim.policies.base import DecodeBatch, Policy, StepOutcome
from specdec_sim.policies.registry import as_policy
from specdec_sim.policies.vllm import batch_range_problem
from specdec_sim.acceptance.draws import AcceptanceDrawer
from specdec_sim.simulator.recorder import Recorder, StepRecord
from specdec_sim.simulator.request import Request
from specdec_sim.simulator.scheduler import Scheduler

_budget_left = attrgetter("budget_left")


class Replica:
    """A scheduler, a policy and an acceptance process of one replica, run as a SimPy process."""

    def __init__(self, env, index: int, cost: CostModel, policy: Policy, scheduler: Scheduler,
                 acceptance: AcceptanceDrawer, recorder: Recorder, style: str,
                 policy_cost: CostModel | None = None, noise: Callable[[StepTime], StepTime] | None = None):
        """`cost` advances the clock (the truth); `policy_cost` is what the policy prices candidates with
        (default: the truth); `noise`, if given, perturbs each true step time."""
        self.env = env
        self.index = index
        self.cost = cost
        self.policy_cost = cost if policy_cost is None else policy_cost
        self.noise = noise
        self.policy = policy = as_policy(policy)  # built-ins as they are; any other object checked at every call
        problem = batch_range_problem(policy, scheduler.max_num_seqs)
        if problem:
            raise ValueError(problem)
        self.observes = getattr(policy, "observes", True)  # False: policy.observe ignores its outcome
        self.scheduler = scheduler
        self.acceptance = acceptance
        self.recorder = recorder
        self.style = style
        self.tree = style == "tree"
        self.ngram = style == "ngram"
        self.max_k = scheduler.max_k
        self.decode_steps = 0
        self.wakeup = env.event()
        self.process = env.process(self.run())

    def enqueue(self, req: Request) -> None:
        req.replica = self.index
        self.scheduler.waiting.append(req)
        if not self.wakeup.triggered:
            self.wakeup.succeed()

    def outstanding_tokens(self) -> int:
        return self.scheduler.outstanding_tokens()

    def run(self):
        env, scheduler, recorder, cost, policy = self.env, self.scheduler, self.recorder, self.cost, self.policy
        while True:
            if not scheduler.running and not scheduler.waiting:
                self.wakeup = env.event()
                yield self.wakeup
                continue
            plan = scheduler.plan(self.propose)
            for req, reason in plan.failed:
                recorder.fail(req, env.now, reason)
            if plan.preemptions:
                recorder.preempted(plan.preemptions)
            decoding, ks, prefills = plan.decoding, plan.ks, plan.prefills
            if not decoding and not prefills:
                continue
            prefill = prefill_terms([(c, r.prefill_done) for r, c in prefills]) if prefills else NO_PREFILL
            shape = step_shape(ks, plan.kv_tokens, prefill, self.tree)
            timing = cost.step_time(shape)
            if self.noise is not None:
                timing = self.noise(timing)
            start = env.now
            yield env.timeout(timing.total_s)
            end = env.now
            accepted = self.acceptance.draw(decoding, ks)
            result = scheduler.complete(plan, accepted, end)
            if decoding:
                if self.observes:
                    policy.observe(StepOutcome(decoding, ks, accepted, timing.total_s))
                self.decode_steps += 1
            recorder.step(StepRecord(self.index, self.decode_steps, start, end, timing, shape, result,
                                     policy.estimated_alpha() if recorder.record_steps else None,
                                     scheduler.kv.used, len(scheduler.waiting)))

    def propose(self, decoding: list[Request], kv_tokens: int, prefill_tokens: int, num_prefill: int) -> list[int]:
        """The policy's proposal lengths for `decoding`, capped to what the engine can run."""
        ngram = self.ngram
        if ngram:  # prompt lookup: this step's n-gram match per request, drawn before the policy proposes
            self.acceptance.mark_matches(decoding)
        scheduler = self.scheduler
        # requests, cost, kv_tokens, max_k, style, prefill_tokens, num_prefill, queue_len, free_kv_tokens
        batch = DecodeBatch(decoding, self.policy_cost, kv_tokens, self.max_k, self.style, prefill_tokens, num_prefill,
                            len(scheduler.waiting), scheduler.kv.free * scheduler.kv.block_size)
        ks = self.policy.propose(batch)
        max_k = self.max_k
        top = max(ks)
        if not ngram and top <= max_k and min(ks) >= 0 and (not top or top < min(map(_budget_left, decoding))):
            return list(ks)  # nothing to cap (no drafts need no budget check): the common case
        out = []
        for req, k in zip(decoding, ks):
            if k > max_k:
                k = max_k
            if k >= req.budget_left:  # max_tokens: the server cannot use more (it knows no EOS in advance)
                k = req.budget_left - 1
            if k < 0 or (ngram and not req.ngram_match):
                k = 0
            out.append(k)
        return out

"""Speculation policies: pure code that picks a proposal length k per request per decode step.

`make_policy("fixed:3")`, `make_policy("smartspec:k_max=7")`, `make_policy("my_module:MyPolicy:x=1")`:
build a policy from a CLI spec (policies/registry.py). The protocol is in policies/base.py.

Registered (smartspec-reference.md sections in brackets; every parameter is a key=value):
  none; fixed:k                                              (6.1 i-ii)
  vllm-disable:k,threshold                                   (6.1 iii, 5.3 #4592)
  vllm-table:table=1-4:5;5-16:3;17-1024:0 | table=path.json  (6.1 iv)
  smartspec:k_max,interval,bias,sticky_steps,alpha,counting,oom_guard,
            sticky=released|redecide,ngram=released|as-draft,lookup_ms      (2.1, 2.2, 1.3, 1.4)
  turbospec:k_max,interval,window,initial_alpha,per_request,counting=prefix|position,
            reprobe=truncate|verify                                          (2.3)
The author-named policies run as released by default; docs/policy-variants.md lists the variants.
  goodput-greedy:k_max,prior,initial_alpha,window,counting   (6.2 items 1-2)
  oracle:k_max   (true per-request alpha: an upper bound, not a real policy)
"""
from __future__ import annotations

from specdec_sim.policies.base import DecodeBatch, FixedK, NoSpeculation, Policy, SpecRequest, StepOutcome
from specdec_sim.policies.greedy import GoodputGreedy, Oracle
from specdec_sim.policies.registry import ENTRY_POINT_GROUP, REGISTRY, PolicySpecError, make_policy, parse_policy_spec
from specdec_sim.policies.smartspec import SmartSpec
from specdec_sim.policies.turbospec import TurboSpec
from specdec_sim.policies.vllm import VllmDisable, VllmTable

__all__ = ["DecodeBatch", "FixedK", "NoSpeculation", "Policy", "SpecRequest", "StepOutcome",
           "PolicySpecError", "make_policy", "parse_policy_spec", "REGISTRY", "ENTRY_POINT_GROUP", "SmartSpec",
           "TurboSpec", "GoodputGreedy", "Oracle", "VllmDisable", "VllmTable"]

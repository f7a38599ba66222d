"""Speculation policies: pure code that picks a proposal length k per request per decode step.

`make_policy("fixed:3")`, `make_policy("smartspec:k_max=7")`: build a policy from a CLI spec
`NAME[:key=value,...]` (for `fixed` a bare integer is accepted: `fixed:3`).

Registered (smartspec-reference.md sections in brackets; every parameter is a key=value):
  none; fixed:k                                              (6.1 i-ii)
  vllm-disable:k,threshold                                   (6.1 iii, 5.3 #4592)
  vllm-table:table=1-4:5;5-16:3;17-1024:0 | table=path.json  (6.1 iv)
  smartspec:k_max,interval,bias,sticky_steps,alpha,counting,oom_guard  (2.1, 2.2, 1.3, 1.4)
  turbospec:k_max,interval,window,initial_alpha,per_request,counting,reprobe  (2.3)
  goodput-greedy:k_max,prior,initial_alpha,window,counting   (6.2 items 1-2)
  oracle:k_max   (true per-request alpha: an upper bound, not a real policy)
"""
from __future__ import annotations

from typing import Callable

import math

from specdec_sim.policies.base import DecodeBatch, FixedK, NoSpeculation, Policy, SpecRequest, StepOutcome
from specdec_sim.policies.greedy import GoodputGreedy, Oracle
from specdec_sim.policies.smartspec import SmartSpec
from specdec_sim.policies.turbospec import TurboSpec
from specdec_sim.policies.vllm import VllmDisable, VllmTable, load_table


class PolicySpecError(ValueError):
    """A --policy string that names no policy or carries a bad parameter."""


def _int(params: dict[str, str], key: str, default: int | None, lo: int = 0, hi: int = 10**9) -> int | None:
    if key not in params:
        return default
    text = params.pop(key)
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{key}={text!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ValueError(f"{key}={value} must be in {lo}..{hi}")
    return value


def _float(params: dict[str, str], key: str, default: float | None, lo: float = 0.0,
           hi: float = 1e9) -> float | None:
    if key not in params:
        return default
    text = params.pop(key)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{key}={text!r} is not a number") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{key}={text} must be in [{lo}, {hi}]")
    return value


def _bool(params: dict[str, str], key: str, default: bool) -> bool:
    if key not in params:
        return default
    text = params.pop(key).lower()
    if text not in ("0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"{key}={text!r} must be 0 or 1")
    return text in ("1", "true", "yes")


def _str(params: dict[str, str], key: str, default: str) -> str:
    return params.pop(key, default)


def _fixed(params: dict[str, str]) -> Policy:
    return FixedK(k=_int(params, "k", 3, 0, 1024))


def _vllm_disable(params: dict[str, str]) -> Policy:
    return VllmDisable(k=_int(params, "k", 3, 0, 1024), threshold=_int(params, "threshold", 32, 1))


def _vllm_table(params: dict[str, str]) -> Policy:
    if "table" not in params:
        raise ValueError("vllm-table needs table=START-END:K;... or table=PATH.json")
    return VllmTable(table=load_table(params.pop("table")))


def _smartspec(params: dict[str, str]) -> Policy:
    return SmartSpec(k_max=_int(params, "k_max", None, 0, 64), interval=_int(params, "interval", 20, 1),
                     bias=_float(params, "bias", 1.1, 1e-6, 1e6), sticky_steps=_int(params, "sticky_steps", 100, 1),
                     alpha=_float(params, "alpha", None, 0.0, 1.0), counting=_str(params, "counting", "position"),
                     oom_guard=_bool(params, "oom_guard", True))


def _turbospec(params: dict[str, str]) -> Policy:
    return TurboSpec(k_max=_int(params, "k_max", None, 0, 64), interval=_int(params, "interval", 200, 1),
                     window=_int(params, "window", 100, 1, 10**6),
                     initial_alpha=_float(params, "initial_alpha", 0.5, 0.0, 1.0),
                     per_request=_bool(params, "per_request", False), counting=_str(params, "counting", "position"),
                     reprobe=_bool(params, "reprobe", True))


def _goodput_greedy(params: dict[str, str]) -> Policy:
    return GoodputGreedy(k_max=_int(params, "k_max", None, 0, 64), prior=_float(params, "prior", 10.0),
                         initial_alpha=_float(params, "initial_alpha", 0.7, 0.0, 1.0),
                         window=_int(params, "window", 100, 1, 10**6), counting=_str(params, "counting", "position"))


def _oracle(params: dict[str, str]) -> Policy:
    return Oracle(k_max=_int(params, "k_max", None, 0, 64))


def _none(params: dict[str, str]) -> Policy:
    return NoSpeculation()


# name -> factory(params) ; every factory pops the keys it knows, leftovers are an error.
REGISTRY: dict[str, Callable[[dict[str, str]], Policy]] = {
    "none": _none, "fixed": _fixed, "vllm-disable": _vllm_disable, "vllm-table": _vllm_table,
    "smartspec": _smartspec, "turbospec": _turbospec, "goodput-greedy": _goodput_greedy, "oracle": _oracle,
}


def parse_policy_spec(spec: str) -> tuple[str, dict[str, str]]:
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            if name == "fixed" and "k" not in params:
                params["k"] = key
                continue
            raise PolicySpecError(f"--policy {spec!r}: parameter {item!r} is not key=value")
        params[key.strip().replace("-", "_")] = value.strip()
    return name.strip(), params


def make_policy(spec: str) -> Policy:
    name, params = parse_policy_spec(spec)
    if name not in REGISTRY:
        raise PolicySpecError(f"--policy {spec!r}: unknown policy {name!r}; choose from {', '.join(sorted(REGISTRY))}")
    try:
        policy = REGISTRY[name](params)
    except (ValueError, TypeError) as exc:
        raise PolicySpecError(f"--policy {spec!r}: {exc}") from None
    if params:
        raise PolicySpecError(f"--policy {spec!r}: unknown parameter(s) {', '.join(sorted(params))} for {name}")
    return policy


__all__ = ["DecodeBatch", "FixedK", "NoSpeculation", "Policy", "SpecRequest", "StepOutcome",
           "PolicySpecError", "make_policy", "parse_policy_spec", "REGISTRY", "SmartSpec", "TurboSpec",
           "GoodputGreedy", "Oracle", "VllmDisable", "VllmTable"]

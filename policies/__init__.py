"""Speculation policies: pure code that picks a proposal length k per request per decode step.

`make_policy("fixed:3")`, `make_policy("smartspec:k_max=7")`: build a policy from a CLI spec
`NAME[:key=value,...]` (for `fixed` a bare integer is accepted: `fixed:3`).
"""
from __future__ import annotations

from typing import Callable

from policies.base import DecodeBatch, FixedK, NoSpeculation, Policy, SpecRequest, StepOutcome


class PolicySpecError(ValueError):
    """A --policy string that names no policy or carries a bad parameter."""


def _fixed(params: dict[str, str]) -> Policy:
    return FixedK(k=int(params.pop("k", "3")))


def _none(params: dict[str, str]) -> Policy:
    return NoSpeculation()


# name -> factory(params) ; every factory pops the keys it knows, leftovers are an error.
REGISTRY: dict[str, Callable[[dict[str, str]], Policy]] = {"none": _none, "fixed": _fixed}


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
           "PolicySpecError", "make_policy", "parse_policy_spec", "REGISTRY"]

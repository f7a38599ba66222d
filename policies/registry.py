"""Building policies from `--policy` specs: the built-in names, installed plugins, and user classes.

A spec is `NAME[:key=value,...]` for a registered policy (`fixed:3`, `smartspec:interval=10`; for
`fixed` a bare integer is accepted), or `module:Class[:key=value,...]` for a class in any
importable module (the current directory is importable, so `my_policy:Mine` finds
`./my_policy.py`). Installed packages can register names under the entry-point group
`specdec_sim.policies` (`name = "pkg.module:Class"`). A user class is called with the spec's
parameters as keyword arguments (`1` -> int, `0.5` -> float, `true`/`false` -> bool, `none` -> None, else str) and
must have `propose(batch)` and `observe(outcome)`; `name`, `estimated_alpha()` and `observes` are optional.
Every call of `make_policy` builds a fresh instance, so each replica gets its own state. A user policy is
returned behind `CheckedPolicy` (policies/checked.py: every proposal and every exception checked);
`as_policy` does the same for a policy object handed over directly, and keeps the built-ins as they are.
"""
from __future__ import annotations

import importlib
import math
import os
import sys
from importlib.metadata import entry_points
from typing import Any, Callable

from specdec_sim.policies.base import FixedK, NoSpeculation, Policy
from specdec_sim.policies.checked import CheckedPolicy, missing_methods, policy_name
from specdec_sim.policies.greedy import GoodputGreedy, Oracle
from specdec_sim.policies.smartspec import V0_NGRAM_ZERO_DRAFT_MS, SmartSpec
from specdec_sim.policies.turbospec import TurboSpec
from specdec_sim.policies.vllm import VllmDisable, VllmTable, load_table

ENTRY_POINT_GROUP = "specdec_sim.policies"


class PolicySpecError(ValueError):
    """A --policy string that names no policy or carries a bad parameter."""


def _number(params: dict[str, str], key: str, default: Any, kind: type, lo: float, hi: float) -> Any:
    """Pop `key` from params as an int or float in [lo, hi] (or return `default` if absent)."""
    if key not in params:
        return default
    text = params.pop(key)
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{key}={text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{key}={text} must be in {lo}..{hi}" if kind is int else f"{key}={text} must be in [{lo}, {hi}]")
    return value


def _int(params: dict[str, str], key: str, default: int | None, lo: int = 0, hi: int = 10**9) -> int | None:
    return _number(params, key, default, int, lo, hi)


def _float(params: dict[str, str], key: str, default: float | None, lo: float = 0.0,
           hi: float = 1e9) -> float | None:
    return _number(params, key, default, float, lo, hi)


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
                     oom_guard=_bool(params, "oom_guard", True), sticky=_str(params, "sticky", "released"),
                     ngram=_str(params, "ngram", "released"),
                     lookup_ms=_float(params, "lookup_ms", V0_NGRAM_ZERO_DRAFT_MS, 0.0, 1e6))


def _turbospec(params: dict[str, str]) -> Policy:
    return TurboSpec(k_max=_int(params, "k_max", None, 0, 64), interval=_int(params, "interval", 200, 1),
                     window=_int(params, "window", 100, 1, 10**6),
                     initial_alpha=_float(params, "initial_alpha", 0.5, 0.0, 1.0),
                     per_request=_bool(params, "per_request", False), counting=_str(params, "counting", "prefix"),
                     reprobe=_str(params, "reprobe", "truncate"))


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


def parse_params(spec: str, name: str, rest: str) -> dict[str, str]:
    """`key=value,...` -> dict (keys with '-' read as '_'); `fixed` takes a bare k."""
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            if name == "fixed" and "k" not in params:
                params["k"] = key
                continue
            raise PolicySpecError(f"--policy {spec!r}: parameter {item!r} is not key=value")
        params[key.strip().replace("-", "_")] = value.strip()
    return params


def parse_policy_spec(spec: str) -> tuple[str, dict[str, str]]:
    """(name, params) of a registered-name spec `NAME[:k=v,...]`."""
    name, _, rest = spec.strip().partition(":")
    return name.strip(), parse_params(spec, name.strip(), rest)


def _is_class_spec(spec: str) -> bool:
    """`module:Class[:...]`: a first part that is no registered name, then an identifier."""
    first, _, rest = spec.strip().partition(":")
    second = rest.partition(":")[0].strip()
    return first.strip() not in REGISTRY and second.isidentifier() and all(
        part.isidentifier() for part in first.strip().split("."))


def parse_scalar(text: str) -> Any:
    """A parameter's text as a value: int, float, true/false -> bool, none -> None, else the text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _import_class(spec: str, target: str) -> Any:
    """`pkg.module:Class` -> the class (the current directory is searched too)."""
    module_name, _, attr = target.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolicySpecError(f"--policy {spec!r}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - a user module that fails to import is the user's error
        raise PolicySpecError(f"--policy {spec!r}: importing {module_name!r} failed: "
                              f"{type(exc).__name__}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PolicySpecError(f"--policy {spec!r}: module {module_name!r} has no {attr!r}") from None


def _installed(name: str) -> str | None:
    """The `module:Class` an installed package registered under `name` (entry points), or None."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.value
    return None


def _build_plugin(spec: str, target: str, rest: str) -> Policy:
    cls = _import_class(spec, target)
    if not isinstance(cls, type):  # never call an arbitrary function (os:abort, sys:exit) from a spec
        raise PolicySpecError(f"--policy {spec!r}: {target} is not a class")
    params = {k: parse_scalar(v) for k, v in parse_params(spec, target, rest).items()}
    try:
        policy = cls(**params)
    except Exception as exc:  # noqa: BLE001 - a bad parameter of a user class
        raise PolicySpecError(f"--policy {spec!r}: {target}({', '.join(params)}) failed: "
                              f"{type(exc).__name__}: {exc}") from None
    missing = missing_methods(policy)
    if missing:
        raise PolicySpecError(f"--policy {spec!r}: {target} has no {' or '.join(missing)} method")
    return as_policy(policy, spec.strip())


BUILTIN_TYPES = (NoSpeculation, FixedK, VllmDisable, VllmTable, SmartSpec, TurboSpec, GoodputGreedy, Oracle)


def as_policy(obj: Any, name: str | None = None) -> Policy:
    """`obj` as the engine runs it: a built-in policy as it is (trusted, on the fast path), anything else with
    `propose` and `observe` behind the checks of policies/checked.py (a subclass of a built-in too), named by
    its `name` attribute, else `name`, else its class."""
    if type(obj) in BUILTIN_TYPES or isinstance(obj, CheckedPolicy):
        return obj
    missing = missing_methods(obj)
    if missing:
        raise PolicySpecError(f"policy {type(obj).__name__}: has no {' or '.join(missing)} method")
    return CheckedPolicy(obj, policy_name(obj, name or type(obj).__name__))


def make_policy(spec: str) -> Policy:
    """A fresh policy instance for `spec` (see the module docstring for the forms)."""
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if name not in REGISTRY:
        installed = _installed(name)
        if installed is not None:
            return _build_plugin(spec, installed, rest)
        if _is_class_spec(spec):
            cls_name, _, params = rest.partition(":")
            return _build_plugin(spec, f"{name}:{cls_name.strip()}", params)
        raise PolicySpecError(f"--policy {spec!r}: unknown policy {name!r}; choose from {', '.join(sorted(REGISTRY))}"
                              f", or give module:Class")
    params = parse_params(spec, name, rest)
    try:
        policy = REGISTRY[name](params)
    except (ValueError, TypeError) as exc:
        raise PolicySpecError(f"--policy {spec!r}: {exc}") from None
    if params:
        raise PolicySpecError(f"--policy {spec!r}: unknown parameter(s) {', '.join(sorted(params))} for {name}")
    return policy


__all__ = ["PolicySpecError", "make_policy", "as_policy", "BUILTIN_TYPES", "parse_policy_spec", "parse_scalar",
           "REGISTRY", "ENTRY_POINT_GROUP"]

"""A policy written outside the package, checked at every call: its proposals, and whatever it raises.

The engine trusts the built-in policies (their proposals are right by construction, and the step loop
is hot); anything else (a `module:Class` spec, an entry point, an object handed to `run_simulation`) is
wrapped in a `CheckedPolicy`. Each proposal must be a list (or tuple, or numpy array) of one integer
k per request of the batch (bool and float refused), with 0 <= k <= the batch's `max_k` (`--max-k`); a
wrong one, or anything `propose`, `observe` or `estimated_alpha` raises (`SystemExit` included: a
plugin cannot end the run quietly), is a `PolicyError` naming the policy, the step and the value.
Only `KeyboardInterrupt` (Ctrl-C, and SIGTERM raised like it) passes through as an interruption.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

import numpy as np

from specdec_sim.policies.base import DecodeBatch, StepOutcome

SHOWN_CHARS = 60  # a value quoted in an error is cut here


class PolicyError(ValueError):
    """A policy's output that no engine could run, or an exception raised inside the policy."""


def shown(value: Any) -> str:
    """`repr(value)`, cut to one short line."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def described(exc: BaseException) -> str:
    """`Type: message` of an exception on one short line (its message may itself fail to print)."""
    try:
        detail = " ".join(str(exc).split())
    except Exception:  # noqa: BLE001 - a hostile __str__
        detail = ""
    if len(detail) > SHOWN_CHARS:
        detail = detail[:SHOWN_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def checked_proposal(ks: Any, size: int, max_k: int) -> list[int] | str:
    """`ks` as a list of plain ints, or what is wrong with it (a phrase for the error line)."""
    if isinstance(ks, np.ndarray):
        if ks.ndim != 1:
            return f"returned a {ks.ndim}-dimensional array, not one k per request"
        ks = ks.tolist()
    elif not isinstance(ks, (list, tuple)):
        return f"returned {shown(ks)} ({type(ks).__name__}), not a list of one k per request"
    if len(ks) != size:
        return (f"returned {len(ks)} proposal length{'' if len(ks) == 1 else 's'} for a batch of {size} "
                f"request{'' if size == 1 else 's'} (one k per request)")
    for i, k in enumerate(ks):
        if not _is_int(k):
            return f"returned k={shown(k)} ({type(k).__name__}) for request {i}, not an integer"
        if not 0 <= k <= max_k:
            return f"returned k={k} for request {i}, outside 0..{max_k} (--max-k)"
    return [int(k) for k in ks]


def checked_estimate(value: Any) -> float | None:
    """An acceptance estimate for the step log: None or a real number (else ValueError)."""
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"returned {shown(value)} ({type(value).__name__}), not a number or None")


class CheckedPolicy:
    """A foreign policy behind the checks of the module docstring; `inner` is the object itself."""

    def __init__(self, inner: Any, name: str):
        self.inner = inner
        self.name = name
        observes = getattr(inner, "observes", True)
        self.observes = observes if isinstance(observes, bool) else True
        estimate = getattr(inner, "estimated_alpha", None)
        self._estimate: Callable[[], Any] | None = estimate if callable(estimate) else None
        self.steps = 0  # proposals asked so far: the step named in errors

    def __getattr__(self, attr: str) -> Any:
        """The inner policy's other attributes (its `k`, say, which `simulate` checks against --max-k)."""
        if attr == "inner" or attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def _fail(self, what: str) -> PolicyError:
        where = f"step {self.steps}" if self.steps else "before its first proposal"
        return PolicyError(f"policy {self.name!r}: {where}: {what}")

    def _call(self, method: str, *args: Any) -> Any:
        """`inner.<method>(*args)`; anything it raises but an interruption becomes a PolicyError."""
        try:
            return getattr(self.inner, method)(*args)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit, GeneratorExit...: all the policy's errors
            raise self._fail(f"{method} raised {described(exc)}") from None

    def propose(self, batch: DecodeBatch) -> list[int]:
        """The inner policy's proposal for `batch`, checked (the batch's requests are passed as a tuple)."""
        self.steps += 1
        size, max_k = len(batch.requests), batch.max_k
        batch.requests = tuple(batch.requests)  # the engine's list stays the engine's
        ks = checked_proposal(self._call("propose", batch), size, max_k)
        if isinstance(ks, str):
            raise self._fail(f"propose {ks}")
        return ks

    def observe(self, outcome: StepOutcome) -> None:
        self._call("observe", outcome)

    def estimated_alpha(self) -> float | None:
        if self._estimate is None:
            return None
        value = self._call("estimated_alpha")
        try:
            return checked_estimate(value)
        except ValueError as exc:
            raise self._fail(f"estimated_alpha {exc}") from None


def policy_name(obj: Any, default: str) -> str:
    """The object's `name` if it is a non-empty string, else `default`."""
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) and name.strip() else default


def missing_methods(obj: Any) -> Sequence[str]:
    """Which of `propose` and `observe` `obj` lacks (as callables)."""
    return [m for m in ("propose", "observe") if not callable(getattr(obj, m, None))]


__all__ = ["CheckedPolicy", "PolicyError", "checked_proposal", "checked_estimate", "missing_methods", "policy_name"]

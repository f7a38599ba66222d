"""Plugin policies whose output or behaviour is hostile (issue 22 item 1), for the adversarial campaign.

Written as hostile_policies.py into each case's folder (the current directory is importable) and run as
`--policy hostile_policies:NAME` (tests/test_adversarial.py): every wrong proposal, and whatever the policy
raises, is one line naming the policy and the step; a plugin that behaves runs clean.
"""
from __future__ import annotations

HOSTILE_POLICY_MODULE = '''
import numpy as np


class _Base:
    def observe(self, outcome):
        pass


class Short(_Base):  # one k for a batch of many
    def propose(self, batch):
        return [1]


class Long(_Base):
    def propose(self, batch):
        return [1] * (batch.size + 1)


class Floats(_Base):
    def propose(self, batch):
        return [1.0] * batch.size


class NumpyFloats(_Base):
    def propose(self, batch):
        return np.full(batch.size, 2.0)


class Strings(_Base):
    def propose(self, batch):
        return ["2"] * batch.size


class Bools(_Base):
    def propose(self, batch):
        return [True] * batch.size


class ReturnsNone(_Base):
    def propose(self, batch):
        return None


class Generator(_Base):
    def propose(self, batch):
        return (2 for _ in range(batch.size))


class Negative(_Base):
    def propose(self, batch):
        return [-1] * batch.size


class AboveMaxK(_Base):  # no `k` attribute: only the step can see it
    def propose(self, batch):
        return [batch.max_k + 1] * batch.size


class Huge(_Base):
    def propose(self, batch):
        return [10 ** 30] * batch.size


class ProposeRaises(_Base):
    def propose(self, batch):
        raise RuntimeError("policy bug\\nwith a second line")


class ObserveRaises:
    def propose(self, batch):
        return [2] * batch.size

    def observe(self, outcome):
        raise ZeroDivisionError("division by zero")


class ExitZero(_Base):  # would end simulate with exit 0 and no results
    def propose(self, batch):
        raise SystemExit(0)


class ObserveExits:
    def propose(self, batch):
        return [2] * batch.size

    def observe(self, outcome):
        raise SystemExit("bye")


class Custom(BaseException):
    pass


class RaisesBaseException(_Base):
    def propose(self, batch):
        raise Custom()


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no str")


class RaisesUnprintable(_Base):
    def propose(self, batch):
        raise Unprintable()


class BadEstimate:
    def propose(self, batch):
        return [2] * batch.size

    def observe(self, outcome):
        pass

    def estimated_alpha(self):
        return "high"


class ClearsBatch(_Base):  # tries to empty the engine's batch: it gets a copy
    def propose(self, batch):
        ks = [2] * batch.size
        try:
            batch.requests.clear()
        except AttributeError:
            pass
        return ks


class NumpyInts(_Base):  # fine: integers, one per request
    def propose(self, batch):
        return np.full(batch.size, 2, dtype=np.int64)


class TupleK(_Base):  # fine
    def propose(self, batch):
        return tuple([min(3, batch.max_k)] * batch.size)
'''

# class -> (expectation, text the error line must mention)
HOSTILE_POLICIES: dict[str, tuple[str, str | None]] = {
    "Short": ("error", "1 proposal length for a batch of"), "Long": ("error", "for a batch of"),
    "Floats": ("error", "not an integer"), "NumpyFloats": ("error", "not an integer"),
    "Strings": ("error", "not an integer"), "Bools": ("error", "not an integer"),
    "ReturnsNone": ("error", "None"), "Generator": ("error", "generator"), "Negative": ("error", "k=-1"),
    "AboveMaxK": ("error", "--max-k"), "Huge": ("error", "--max-k"), "ProposeRaises": ("error", "RuntimeError"),
    "ObserveRaises": ("error", "ZeroDivisionError"), "ExitZero": ("error", "SystemExit"),
    "ObserveExits": ("error", "SystemExit"), "RaisesBaseException": ("error", "Custom"),
    "RaisesUnprintable": ("error", "Unprintable"), "BadEstimate": ("error", "estimated_alpha"),
    "ClearsBatch": ("ok", None), "NumpyInts": ("ok", None), "TupleK": ("ok", None),
}

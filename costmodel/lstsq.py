"""Non-negative least squares for the few-column fits of the cost model (pure numpy)."""
from __future__ import annotations

import numpy as np


def nonnegative_lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin ||a x - b|| subject to x >= 0, exactly, for a few full-rank columns: the optimum is the
    unconstrained least-squares fit on its own support, so the best fit over the subsets of columns
    whose unconstrained fit is non-negative is the optimum (2^n small solves, n <= 6 here)."""
    n = a.shape[1]
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    if np.all(x >= 0):
        return x
    best, best_sse = np.zeros(n), float(b @ b)
    for mask in range(1, 2**n - 1):
        cols = [j for j in range(n) if mask >> j & 1]
        sub, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
        if np.any(sub < -1e-12):
            continue
        trial = np.zeros(n)
        trial[cols] = np.maximum(sub, 0.0)
        resid = a @ trial - b
        sse = float(resid @ resid)
        if sse < best_sse:
            best, best_sse = trial, sse
    return best

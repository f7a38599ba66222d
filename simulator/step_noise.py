"""Seeded log-normal noise on true step times, to study how policies cope with a clock they cannot predict.

Each step's draft, verify and overhead times are multiplied by one factor exp(sigma * z - sigma^2 / 2),
z ~ N(0, 1): the factor's mean is 1, so throughput stays unbiased while individual steps vary (sigma 0.1
is about +-10 %). Its own random stream, so the acceptance draws are the same with and without noise.
"""
from __future__ import annotations

import math
import random

from specdec_sim.costmodel import StepTime


class StepTimeNoise:
    """Callable StepTime -> StepTime scaled by one mean-1 log-normal factor per call."""

    def __init__(self, sigma: float, seed: int):
        self.sigma = float(sigma)
        self._shift = -0.5 * self.sigma * self.sigma
        self._rng = random.Random(seed ^ 0x5EED_57E9)

    def factor(self) -> float:
        return math.exp(self.sigma * self._rng.gauss(0.0, 1.0) + self._shift)

    def __call__(self, timing: StepTime) -> StepTime:
        f = self.factor()
        return StepTime(timing.draft_s * f, timing.verify_s * f, timing.overhead_s * f)

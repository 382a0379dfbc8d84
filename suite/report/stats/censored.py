"""Steps to target over seeds, with censoring in mind.

A seed that did not reach the target is *censored*: its steps to target are only known to exceed
the steps it ran (its cap, or where it diverged). Its value is kept as that lower bound, flagged.
The median over seeds is then exact while the middle of the sorted seeds holds reached values
only; once a censored seed reaches the middle (half or more of them censored), the median is only
known to be at least the median of the values with each censored seed at its bound (a *lower
bound*). A mean over the seeds that reached the target would hide the others; it is never used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Seeds:
    """One configuration's seeds: ``steps`` to target where reached, else the steps run (a lower
    bound, ``censored``; +inf for a seed that failed and would never reach it)."""

    steps: np.ndarray
    censored: np.ndarray

    @classmethod
    def of(cls, steps: Sequence[float], censored: Sequence[bool]) -> Seeds:
        return cls(np.asarray(steps, dtype=float), np.asarray(censored, dtype=bool))

    def __len__(self) -> int:
        return len(self.steps)

    def resample(self, rng: np.random.Generator) -> Seeds:
        pick = rng.integers(0, len(self), len(self))
        return Seeds(self.steps[pick], self.censored[pick])


def censored_median(seeds: Seeds) -> tuple[float, bool]:
    """(median, is a lower bound): the median of ``steps`` with censored seeds at their bound, and
    whether a censored seed reaches the middle (then the true median is at least that value)."""
    if not len(seeds):
        return math.nan, False
    unbounded = np.where(seeds.censored, np.inf, seeds.steps)
    return float(np.median(seeds.steps)), bool(np.isinf(np.median(unbounded)))


def median_interval(seeds: Seeds, rng: np.random.Generator, resamples: int = 1000,
                    confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the median over seeds (scale-free, so it is the same on a
    log axis and never below the fewest steps seen); an end that a censored median reaches is +inf
    (unbounded). NaN with fewer than two seeds."""
    if len(seeds) < 2:
        return math.nan, math.nan
    unbounded = np.where(seeds.censored, np.inf, seeds.steps)
    draws = np.median(unbounded[rng.integers(0, len(seeds), (resamples, len(seeds)))], axis=1)
    q = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2], method="lower")
    return float(q[0]), float(q[1])

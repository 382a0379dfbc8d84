"""Steps to target over seeds as bounded values: what the critical-batch fit and the figures need
beyond a censored count (their lower bound, and whether a seed failed outright).

A seed that did not reach the target is *censored*: its steps to target are only known to exceed
the steps it ran (its cap), or never come (+inf: it diverged). The median over seeds is the
smallest count by which at least half of the seeds had reached the target, x_(⌈n/2⌉) of the sorted
counts with a censored seed beyond every reached one; when that order statistic is a censored
seed (fewer than half reached), the median is only known to be at least that seed's bound, and is
reported as that *lower bound*. Its interval is distribution-free: the order statistics
[x_(l), x_(n−l+1)] with the largest l whose binomial coverage reaches the confidence ([min, max]
with fewer than 6 seeds at 95%); an end on a censored seed is +inf. A mean over the seeds that
reached the target would hide the others; it is never used. (These are the definitions of the
report's tables, on values that keep their bounds.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from suite.report.stats.censored import median_ranks, reach_median


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

    def unbounded(self) -> np.ndarray:
        """Sorted counts with every censored seed beyond the reached ones (+inf)."""
        return np.sort(np.where(self.censored, np.inf, self.steps))


def censored_median(seeds: Seeds) -> tuple[float, bool]:
    """(median, is a lower bound): x_(⌈n/2⌉) of the counts; where that is a censored seed, the same
    order statistic of the seeds' bounds, flagged (the true median lies above)."""
    if not len(seeds):
        return math.nan, False
    exact = reach_median(seeds.unbounded())
    return (exact, False) if math.isfinite(exact) else (reach_median(seeds.steps), True)


def median_interval(seeds: Seeds, confidence: float = 0.95) -> tuple[float, float]:
    """The order-statistic interval of the median (:func:`suite.report.stats.censored.median_ranks`);
    NaN with fewer than two seeds, an end on a censored seed +inf."""
    n = len(seeds)
    if n < 2:
        return math.nan, math.nan
    low, high, _ = median_ranks(n, confidence)
    x = seeds.unbounded()
    return float(x[low - 1]), float(x[high - 1])

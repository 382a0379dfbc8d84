"""Counts to a target over seeds, where some seeds never reach it (censored at their step cap).

A mean over the seeds that reached the target hides the ones that did not, and a symmetric
t-interval on skewed step counts runs below one step. Instead:

- **Median over all seeds**, a censored seed counting as beyond the cap (``inf``): the smallest
  count by which at least half of the seeds had reached the target, x_(⌈n/2⌉) of the sorted counts
  (the Kaplan–Meier median when every censoring happens at the cap, after every reached count). It
  exists exactly when at least half of the seeds reached the target; otherwise the cell is
  *censored*.
- **Its interval is distribution-free**: the order statistics [x_(l), x_(n−l+1)] with the largest
  l for which P(l ≤ Bin(n, ½) ≤ n − l) reaches the confidence (n = 10 at 95%: the 2nd and 9th
  counts, 97.9%). Fewer than 6 seeds cannot reach 95%: then [min, max] with the coverage it has
  (5 seeds: 93.8%), which the caller states. Both ends are observed counts, so the interval never
  leaves the values a seed took (never below one step); an upper end beyond the cap is ``inf``.
- **Best and tied** compare log counts (the scale on which step counts are roughly symmetric) by
  the paired t-test of :mod:`suite.report.stats.seeds`, a censored seed entered at its cap: that
  understates the steps of cells with censored seeds, which can only make them look closer to
  the best (the caller separates no one from a best that has censored seeds itself). A two-sided Wilcoxon signed-rank test cannot reach
  p < 0.05 with 5 pairs (its smallest p is 1/16), so it could never separate anything here.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy import stats as sps


def reach_median(counts: Iterable[float]) -> float:
    """x_(⌈n/2⌉) of the counts (``inf`` = not reached): ``inf`` when fewer than half reached;
    NaN for no seeds."""
    x = np.sort(np.asarray(list(counts), dtype=float))
    return float(x[math.ceil(len(x) / 2) - 1]) if len(x) else math.nan


def median_ranks(n: int, confidence: float) -> tuple[int, int, float]:
    """1-based ranks (l, u) of the order-statistic interval of the median of ``n`` values and its
    exact coverage; (1, n) when no narrower pair reaches ``confidence``."""
    best = 1
    for low in range(2, n // 2 + 1):
        if 1 - 2 * sps.binom.cdf(low - 1, n, 0.5) < confidence:
            break
        best = low
    return best, n - best + 1, float(1 - 2 * sps.binom.cdf(best - 1, n, 0.5))


def median_interval(counts: Iterable[float], confidence: float) -> tuple[float, float, float, float]:
    """(median, lo, hi, coverage) over all seeds; ``inf`` marks a censored median or upper end.
    One seed has no interval (NaN ends, coverage 0)."""
    x = np.sort(np.asarray(list(counts), dtype=float))
    median = reach_median(x)
    if len(x) < 2:
        return median, math.nan, math.nan, 0.0
    low, high, coverage = median_ranks(len(x), confidence)
    return median, float(x[low - 1]), float(x[high - 1]), coverage


def log_counts(counts: Iterable[float], caps: Iterable[float]) -> np.ndarray:
    """Log of each seed's count, a censored seed (NaN or ``inf``) at its cap; at least one step."""
    c = np.asarray(list(counts), dtype=float)
    c = np.where(np.isfinite(c), c, np.asarray(list(caps), dtype=float))
    return np.log(np.maximum(c, 1.0))

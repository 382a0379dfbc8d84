"""Batch-size science from stored numbers: learning-rate scaling slopes, the best of k tuning trials,
the divergence boundary and linear convergence rates on the quadratic.

- **Critical batch**: :mod:`suite.report.stats.critical_batch`.
- **lr scaling**: ordinary least squares of log lr on log B; the slope's Student-t interval, from
  at least :data:`MIN_LR_POINTS` batch sizes (two parameters and a t-interval on fewer points
  would read a trend into one or two degrees of freedom).
- **Tunability** (after Sivaprasad et al. 2020): the best of k trials drawn without replacement
  from a cell's n, exactly; its median rather than its mean, so that a failed trial (diverged, or
  under the target protocol not reaching the target) counts as a failure and not as a penalty value
  that would dominate every small k, with the probability that a draw holds a finished trial.
- **Divergence boundary**: the geometric mean of the smallest diverged and the largest stable lr
  below it, from tuning trials (on the quadratic, GD's is 2/L).
- **Rates on the quadratic**: the excess loss of a linear method on a quadratic decays like
  ρ^{2t}, so ρ is the square root of its per-step ratio, fitted over the tail of the run before
  it reaches float noise. Theory for GD: max(|1 − ηL|, |1 − ημ|), which is (κ−1)/(κ+1) at
  η = 2/(L+μ); for heavy ball (PyTorch's ``v = μv + g; θ -= lr·v`` is θ' = θ − lr·g + μ(θ − θ₋₁))
  the spectral radius of its 2×2 iteration at λ = μ and λ = L, which is (√κ−1)/(√κ+1) at its
  optimal (η, μ) = (4/(√L+√μ)², ((√κ−1)/(√κ+1))²).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

FLOAT_EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


MIN_LR_POINTS = 4


def lr_slope(batch_sizes: Sequence[float], lrs: Sequence[float], confidence: float = 0.95
             ) -> tuple[float, float, float]:
    """Slope of log lr on log B and its t-interval; NaN ("not enough points") with fewer than
    :data:`MIN_LR_POINTS` distinct batch sizes."""
    x, y = np.log(np.asarray(batch_sizes, float)), np.log(np.asarray(lrs, float))
    if len(np.unique(x)) < MIN_LR_POINTS:
        return math.nan, math.nan, math.nan
    fit = sps.linregress(x, y)
    half = float(sps.t.ppf(0.5 + confidence / 2, len(x) - 2) * fit.stderr)
    return float(fit.slope), float(fit.slope - half), float(fit.slope + half)


def best_of_k(values: Sequence[float], maximize: bool = False) -> list[tuple[float, float]]:
    """For k = 1..n trials drawn without replacement from ``values`` (NaN: a trial that failed):
    the median of the best value drawn (NaN where a draw of k is more likely than not to hold only
    failures) and the probability that one of them finished, exactly. With i finished values at
    least as good as v, P(best ≤ v) = 1 − C(n − i, k)/C(n, k)."""
    finished = sorted((v for v in values if not math.isnan(v)), reverse=maximize)
    n, m = len(values), len(finished)
    out = []
    for k in range(1, n + 1):
        total, miss, median = math.comb(n, k), math.comb(n, k), math.nan
        for i in range(m):  # miss becomes C(n - i - 1, k), exactly: C(a - 1, k) = C(a, k)(a - k)/a
            miss = miss * (n - i - k) // (n - i) if n - i > k else 0
            if 2 * miss <= total:  # P(best <= finished[i]) >= 1/2
                median = finished[i]
                break
        out.append((median, 1 - math.comb(n - m, k) / total))
    return out


def _bin_mean_log(q: float, lo: np.ndarray, width: np.ndarray) -> np.ndarray:
    """log of the mean of q^s over the steps lo .. lo + width − 1 (log-binned traces)."""
    geometric = np.where(width > 1, np.expm1(width * math.log(q)) / (width * math.expm1(math.log(q))), 1.0)
    return lo * math.log(q) + np.log(geometric)


def linear_rate(step_lo: Sequence[float], count: Sequence[float], excess: Sequence[float],
                floor: float = 0.0) -> float:
    """ρ from an excess-loss trace decaying like ρ^{2t}: the tail (second half, in steps) of the
    stretch before the excess first falls to ``floor`` (float noise), fitted bin-exactly."""
    lo, width, e = (np.asarray(a, dtype=float) for a in (step_lo, count, excess))
    bad = np.flatnonzero(~(e > floor))
    end = bad[0] if len(bad) else len(e)
    if end < 3:
        return math.nan
    lo, width, e = lo[:end], width[:end], e[:end]
    tail = lo >= (lo[0] + lo[-1]) / 2
    lo, width, e = lo[tail], width[tail], e[tail]
    if len(e) < 2:
        return math.nan
    slope = np.polyfit(lo + (width - 1) / 2, np.log(e), 1)[0]
    if (width > 1).any() and slope < 0:  # a bin's mean of a geometric sequence is not its value at the midpoint
        fit = optimize.least_squares(lambda p: p[0] + _bin_mean_log(1 / (1 + math.exp(-p[1])), lo, width) - np.log(e),
                                     [np.log(e[0]) - slope * lo[0], math.log(math.exp(slope) / (1 - math.exp(slope)))])
        slope = math.log(1 / (1 + math.exp(-fit.x[1])))
    return float(math.exp(slope / 2))


def theory_rate(method: str, lr: float, momentum: float, L: float, mu: float) -> float:
    """The worst-case linear rate of GD or heavy ball on a quadratic with curvatures in [μ, L]."""
    if method == "gd":
        return max(abs(1 - lr * L), abs(1 - lr * mu))
    if method == "heavy_ball":
        return max(_heavy_ball_radius(lr * lam, momentum) for lam in (mu, L))
    return math.nan


def _heavy_ball_radius(h: float, beta: float) -> float:
    """Largest |root| of z² − (1 + β − h)z + β (the heavy-ball iteration at curvature h/η)."""
    a = 1 + beta - h
    disc = a * a - 4 * beta
    return math.sqrt(beta) if disc <= 0 else (abs(a) + math.sqrt(disc)) / 2


def optimal_parameters(kappa: float, mu: float = 2.0) -> dict[str, float]:
    """GD's η = 2/(L+μ) and heavy ball's optimal (η, μ) for L = κμ."""
    L = kappa * mu
    root = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    return {"gd_lr": 2 / (L + mu), "hb_lr": 4 / (math.sqrt(L) + math.sqrt(mu)) ** 2, "hb_momentum": root ** 2}


def divergence_boundary(lrs: pd.Series, diverged: pd.Series) -> tuple[float, float]:
    """(smallest diverged lr, boundary): the geometric mean of the smallest diverged lr and the largest
    stable lr below it; NaN where the trials do not bracket it."""
    bad = lrs[diverged.astype(bool)]
    if bad.empty:
        return math.nan, math.nan
    low = bad.min()
    below = lrs[~diverged.astype(bool) & (lrs < low)]
    return float(low), float(math.sqrt(low * below.max())) if len(below) else math.nan

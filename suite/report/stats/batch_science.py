"""Batch-size science from stored numbers: the critical-batch fit, learning-rate scaling slopes,
expected best-of-k from tuning trials, and linear convergence rates on the quadratic.

- **Critical batch** (McCandlish et al. 2018; Shallue et al. 2019): steps-to-target follow
  S(B) = S_min · (1 + B_crit / B); so E(B) = B · S(B) samples, with E_min = S_min · B_crit. The fit
  is least squares in log S over the batch sizes (median over seeds each; a censored seed counts
  as +∞, and a batch size whose median is censored is left out), in log S_min and log B_crit
  (both positive). Intervals: bootstrap over seeds (resample the seeds within each
  batch size, refit; percentile interval).
- **lr scaling**: ordinary least squares of log lr on log B; the slope's Student-t interval.
- **Tunability** (Sivaprasad et al. 2020): the expected best of k trials drawn without replacement
  from the n finished ones, exactly: E[min of k] = Σ_i v_(i) · C(n−i, k−1) / C(n, k) (v ascending).
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
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

FLOAT_EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


def scaling_curve(b, s_min: float, b_crit: float):
    return s_min * (1 + b_crit / np.asarray(b, dtype=float))


def _profile_rss(log_b_crit, log_b: np.ndarray, log_s: np.ndarray):
    """Residual sum of squares in log S at the best log S_min for each log B_crit (rows)."""
    shape = np.log1p(np.exp(np.atleast_1d(log_b_crit)[:, None] - log_b[None, :]))
    resid = log_s[None, :] - shape
    resid -= resid.mean(axis=1, keepdims=True)  # the optimal log S_min is the mean residual
    return (resid ** 2).sum(axis=1)


def fit_batch_scaling(batch_sizes: Sequence[float], steps: Sequence[float]) -> tuple[float, float, float]:
    """(S_min, B_crit, RMSE of the fit in natural-log steps); NaN with fewer than 3 batch sizes.

    Least squares in log S: for a given B_crit the best log S_min is the mean of
    log S − log(1 + B_crit/B), so the fit is one-dimensional in log B_crit: a grid over
    [B_min/10³, B_max·10³] (beyond that B_crit is unidentified), refined by bounded Brent."""
    log_b, log_s = np.log(np.asarray(batch_sizes, float)), np.log(np.asarray(steps, float))
    if len(log_b) < 3:
        return math.nan, math.nan, math.nan
    grid = np.linspace(log_b.min() - math.log(1e3), log_b.max() + math.log(1e3), 241)
    i = int(np.argmin(_profile_rss(grid, log_b, log_s)))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    best = optimize.minimize_scalar(lambda x: float(_profile_rss(x, log_b, log_s)[0]), bounds=(lo, hi),
                                    method="bounded", options={"xatol": 1e-6}).x
    log_s_min = float(np.mean(log_s - np.log1p(np.exp(best - log_b))))
    rss = float(_profile_rss(best, log_b, log_s)[0])
    return math.exp(log_s_min), math.exp(best), math.sqrt(rss / len(log_b))


def _medians(per_batch: Mapping[float, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Batch sizes and their median steps over seeds (unreached = +∞), censored medians left out."""
    b = np.array(sorted(per_batch), dtype=float)
    med = np.array([np.median(per_batch[k]) for k in sorted(per_batch)], dtype=float)
    ok = np.isfinite(med)
    return b[ok], med[ok]


def batch_scaling(per_batch: Mapping[float, Sequence[float]], resamples: int = 500, confidence: float = 0.95,
                  seed: int = 0) -> dict[str, float]:
    """The critical-batch fit of one optimizer. ``per_batch`` maps a batch size to its seeds' steps
    to target (NaN or inf: not reached). Interval columns are NaN with fewer than two seeds."""
    data = {float(k): np.where(np.isfinite(np.asarray(v, float)), np.asarray(v, float), np.inf)
            for k, v in per_batch.items() if len(v)}
    b, med = _medians(data)
    s_min, b_crit, rmse = fit_batch_scaling(b, med)
    out = dict(b_crit=b_crit, b_crit_lo=math.nan, b_crit_hi=math.nan, s_min=s_min, s_min_lo=math.nan,
               s_min_hi=math.nan, e_min=s_min * b_crit, fit_rmse_log=rmse, n_batch_sizes=len(b),
               censored=len(data) - len(b))
    if math.isnan(b_crit) or max(len(v) for v in data.values()) < 2 or resamples < 1:
        return out
    rng = np.random.default_rng(seed)
    fits = []
    for _ in range(resamples):
        drawn = {k: rng.choice(v, size=len(v), replace=True) for k, v in data.items()}
        fit = fit_batch_scaling(*_medians(drawn))
        if not math.isnan(fit[0]):
            fits.append(fit[:2])
    if fits:
        q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]
        (out["s_min_lo"], out["s_min_hi"]), (out["b_crit_lo"], out["b_crit_hi"]) = np.percentile(
            np.array(fits), q, axis=0).T.tolist()
    return out


def lr_slope(batch_sizes: Sequence[float], lrs: Sequence[float], confidence: float = 0.95
             ) -> tuple[float, float, float]:
    """Slope of log lr on log B and its t-interval (NaN interval with fewer than 3 points)."""
    x, y = np.log(np.asarray(batch_sizes, float)), np.log(np.asarray(lrs, float))
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan, math.nan, math.nan
    fit = sps.linregress(x, y)
    if len(x) < 3:
        return float(fit.slope), math.nan, math.nan
    half = float(sps.t.ppf(0.5 + confidence / 2, len(x) - 2) * fit.stderr)
    return float(fit.slope), float(fit.slope - half), float(fit.slope + half)


def expected_best_of_k(values: Sequence[float], maximize: bool = False) -> list[float]:
    """E[best of k draws without replacement from ``values``] for k = 1..n, exactly."""
    v = sorted(values, reverse=maximize)
    n = len(v)
    return [sum(v[i] * math.comb(n - i - 1, k - 1) for i in range(n - k + 1)) / math.comb(n, k)
            for k in range(1, n + 1)]


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

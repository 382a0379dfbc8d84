"""The critical batch size (McCandlish et al. 2018; Shallue et al. 2019): steps to target follow
S(B) = S_min · (1 + B_crit / B), so E(B) = B · S(B) samples with E_min = S_min · B_crit.

- **Fit**: least squares in log S over the batch sizes, on each batch size's median over seeds
  (:mod:`suite.report.stats.bounds`). A batch size whose median is censored is a *lower bound*:
  it adds (log bound − log S(B))² only where the curve passes below it, so it constrains the fit
  without pulling on it. A batch size where most seeds failed (diverged: +inf) says nothing about
  S(B) and is left out (counted). At least three batch sizes with an exact median are needed.
- **Intervals**: two percentile bootstraps, and the interval reported spans both. (1) *Seeds and
  re-tunings*: per batch size, draw one of its tunings (the primary and each re-tuning, where the
  study repeated the tuning), then that tuning's seeds with replacement; refit. (2) *Lack of fit*:
  the fitted curve plus the fit's residuals drawn with replacement (scaled by √(n/(n−2)) for the two
  fitted parameters); refit. The first is what the seeds and the tuner's luck move, the second what
  the model leaves unexplained; a curve the model fits badly gets a wide interval.
- **Bounds**: a B_crit above the largest batch size with an exact median is reported as "> B_max"
  (scaling was still near-perfect there: only E_min is identified), below the smallest as
  "< B_min" (no scaling from the start: only S_min is); interval ends beyond them likewise.
- **Jackknife**: drop each batch size in turn and refit; the range of those B_crit is reported, and
  a fit that any single batch size moves outside its interval is *fragile* (with at least two
  refits: dropping an exact median from three leaves no fit).
- **Faster than perfect scaling**: adjacent batch sizes (exact medians) where k× the batch takes
  more than k× fewer steps; the model forbids it (S(B)·B grows with B), so each is counted.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from suite.report.stats.bounds import Seeds, censored_median

Curve = Mapping[float, Sequence[Seeds]]  # batch size -> its tunings' seeds (index 0: the primary tuning)
GRID_DECADES = 3  # B_crit is searched over [B_min / 10³, B_max · 10³]; beyond that it is unidentified
GOLDEN_STEPS = 40  # the grid's bracket (two steps, ~0.06 in log B_crit) shrunk 0.618^40: ~10⁻⁹


def scaling_curve(b, s_min: float, b_crit: float):
    return s_min * (1 + b_crit / np.asarray(b, dtype=float))


def _best_log_s_min(v: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per row of ``v`` (log S − log(1 + B_crit/B) at each batch size): the log S_min minimizing
    Σ_exact (v − a)² + Σ_bounds max(0, v − a)². With the k largest bounds taken as active its root
    is their mean with the exact values; each such mean is at most the true root and the right k
    reaches it, so the root is the largest of them."""
    total, n = v[:, exact].sum(axis=1, keepdims=True), exact.sum()
    bounds = -np.sort(-v[:, ~exact], axis=1)  # descending
    active = np.concatenate([np.zeros((len(v), 1)), np.cumsum(bounds, axis=1)], axis=1)
    return ((total + active) / (n + np.arange(active.shape[1]))).max(axis=1)


def _profile(log_b_crit: np.ndarray, log_b: np.ndarray, log_s: np.ndarray, exact: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(loss, log S_min) of each curve (rows of ``log_s``) at each of its log B_crit (the same row of
    ``log_b_crit``, any number of columns): squared residuals in log S, bounds one-sided."""
    v = log_s[:, None, :] - np.log1p(np.exp(log_b_crit[:, :, None] - log_b[None, None, :]))
    a = _best_log_s_min(v.reshape(-1, v.shape[2]), exact).reshape(v.shape[:2])
    resid = v - a[:, :, None]
    resid = np.where(exact, resid, np.clip(resid, 0, None))
    return (resid ** 2).sum(axis=2), a


def _golden(loss, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The minimizer of each row's ``loss`` (vectorized over rows) on [lo, hi], by golden-section search
    to well below 10⁻⁶ (the bracket shrinks 0.618× a step)."""
    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = loss(c), loss(d)
    for _ in range(GOLDEN_STEPS):
        left = fc < fd  # the minimum lies in [lo, d]: d becomes the upper end and c the new d
        lo, hi = np.where(left, lo, c), np.where(left, d, hi)
        c, d = np.where(left, hi - ratio * (hi - lo), d), np.where(left, c, lo + ratio * (hi - lo))
        fresh = loss(np.where(left, c, d))  # the one new point of each row
        fc, fd = np.where(left, fresh, fd), np.where(left, fc, fresh)
    return (lo + hi) / 2


def fit_many(batch_sizes, steps, bound=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S_min, B_crit, RMSE in natural-log steps over the exact medians) of S(B) fitted to each row of
    ``steps`` (curves over the same ``batch_sizes``, ``bound``: which are lower bounds); NaN with fewer
    than 3 exact medians. The loss is one-dimensional in log B_crit once log S_min is profiled out:
    a grid, refined by golden-section search; every curve at once."""
    log_b, log_s = np.log(np.asarray(batch_sizes, float)), np.log(np.atleast_2d(np.asarray(steps, float)))
    exact = ~np.asarray(bound if bound is not None else np.zeros(len(log_b), bool), dtype=bool)
    rows = len(log_s)
    if exact.sum() < 3:
        return np.full(rows, math.nan), np.full(rows, math.nan), np.full(rows, math.nan)
    span = math.log(10 ** GRID_DECADES)
    grid = np.linspace(log_b[exact].min() - span, log_b[exact].max() + span, 241)
    i = np.argmin(_profile(np.broadcast_to(grid, (rows, len(grid))), log_b, log_s, exact)[0], axis=1)
    lo, hi = grid[np.maximum(i - 1, 0)], grid[np.minimum(i + 1, len(grid) - 1)]
    best = _golden(lambda x: _profile(x[:, None], log_b, log_s, exact)[0][:, 0], lo, hi)
    a = _profile(best[:, None], log_b, log_s, exact)[1][:, 0]
    resid = log_s[:, exact] - a[:, None] - np.log1p(np.exp(best[:, None] - log_b[exact]))
    return np.exp(a), np.exp(best), np.sqrt(np.mean(resid ** 2, axis=1))


def fit(batch_sizes, steps, bound=None) -> tuple[float, float, float]:
    """:func:`fit_many` of one curve."""
    return tuple(float(x[0]) for x in fit_many(batch_sizes, steps, bound))


def _fits(sizes: np.ndarray, steps: np.ndarray, bound: np.ndarray) -> list[tuple[float, float]]:
    """(S_min, B_crit) of each row of ``steps``, its batch sizes those with a finite value (rows with
    the same finite values and bounds fitted together)."""
    ok = np.isfinite(steps)
    out = np.full((len(steps), 2), math.nan)
    patterns, which = np.unique(np.concatenate([ok, bound], axis=1), axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        rows, keep = np.flatnonzero(which.ravel() == p), pattern[:len(sizes)]
        s_min, b_crit, _ = fit_many(sizes[keep], steps[rows][:, keep], pattern[len(sizes):][keep])
        out[rows, 0], out[rows, 1] = s_min, b_crit
    return [tuple(row) for row in out]


def medians(curve: Curve) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch sizes, the median over seeds of the primary tuning at each, and which medians are lower
    bounds."""
    sizes = np.array(sorted(curve), dtype=float)
    meds = [censored_median(curve[b][0]) for b in sizes]
    return sizes, np.array([m for m, _ in meds], float), np.array([c for _, c in meds], bool)


def _percentiles(fits: list[tuple[float, float]], confidence: float) -> np.ndarray:
    """[[S_min lo, hi], [B_crit lo, hi]] from bootstrap fits (NaN rows left out)."""
    arr = np.array([f for f in fits if not math.isnan(f[0])]).reshape(-1, 2)
    if not len(arr):
        return np.full((2, 2), math.nan)
    return np.percentile(arr, [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100], axis=0).T


def seed_bootstrap(curve: Curve, resamples: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Fits to curves redrawn over tunings (one per batch size) and their seeds; none when every
    batch size has one tuning of one seed (nothing to redraw)."""
    if all(len(t) == 1 and len(t[0]) < 2 for t in curve.values()):
        return []
    sizes = sorted(curve)
    drawn = np.array([[censored_median(curve[b][rng.integers(len(curve[b]))].resample(rng)) for b in sizes]
                      for _ in range(resamples)], float).reshape(resamples, len(sizes), 2)
    return _fits(np.array(sizes, float), drawn[:, :, 0], drawn[:, :, 1].astype(bool))


def residual_bootstrap(sizes, steps, bound, resamples: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Fits to the fitted curve plus its own residuals (exact medians) drawn with replacement."""
    s_min, b_crit, _ = fit(sizes, steps, bound)
    exact = ~bound
    fitted = np.log(scaling_curve(sizes[exact], s_min, b_crit))
    resid = np.log(steps[exact]) - fitted
    resid = resid * math.sqrt(len(resid) / (len(resid) - 2))
    redrawn = np.repeat(steps[None, :].astype(float), resamples, axis=0)
    for row in redrawn:
        row[exact] = np.exp(fitted + rng.choice(resid, len(resid)))
    s_mins, b_crits, _ = fit_many(sizes, redrawn, bound)
    return list(zip(s_mins.tolist(), b_crits.tolist()))


def jackknife(sizes, steps, bound) -> list[float]:
    """B_crit refitted with each batch size left out in turn (the refits that can be made)."""
    keep = [np.arange(len(sizes)) != i for i in range(len(sizes))]
    fits = [fit(sizes[k], steps[k], bound[k])[1] for k in keep]
    return [f for f in fits if not math.isnan(f)]


def faster_than_perfect(sizes, steps, bound) -> list[str]:
    """Adjacent batch sizes with exact medians where the speed-up beats the batch ratio."""
    out = []
    for (b1, s1, c1), (b2, s2, c2) in zip(zip(sizes, steps, bound), list(zip(sizes, steps, bound))[1:]):
        if not (c1 or c2) and s1 / s2 > b2 / b1:
            out.append(f"{b1:g}→{b2:g}: {s1 / s2:.3g}× fewer steps for {b2 / b1:.3g}× the batch")
    return out


def relation(value: float, b_min: float, b_max: float) -> str:
    """'>' beyond the largest batch measured, '<' below the smallest, '' inside."""
    if math.isnan(value):
        return ""
    return ">" if value > b_max else "<" if value < b_min else ""


def critical_batch(curve: Curve, resamples: int = 500, confidence: float = 0.95, seed: int = 0) -> dict:
    """The critical-batch fit of one optimizer with its intervals, bounds, jackknife and the pairs
    that beat perfect scaling (the columns of the report's ``batch_scaling`` table)."""
    curve = {float(b): [s for s in t if len(s)] for b, t in curve.items() if any(len(s) for s in t)}
    sizes, steps, bound = medians(curve)
    failed = ~np.isfinite(steps)  # most seeds diverged: no statement about S(B) there
    sizes, steps, bound = sizes[~failed], steps[~failed], bound[~failed]
    s_min, b_crit, rmse = fit(sizes, steps, bound)
    faster = faster_than_perfect(sizes, steps, bound)
    exact = sizes[~bound]
    b_min, b_max = (float(exact.min()), float(exact.max())) if len(exact) else (math.nan, math.nan)
    out = dict(b_crit=b_crit, b_crit_lo=math.nan, b_crit_hi=math.nan, b_crit_relation=relation(b_crit, b_min, b_max),
               s_min=s_min, s_min_lo=math.nan, s_min_hi=math.nan, e_min=s_min * b_crit, fit_rmse_log=rmse,
               n_batch_sizes=int((~bound).sum()), censored=int(bound.sum()), failed=int(failed.sum()),
               b_min=b_min, b_max=b_max,
               n_tunings=max((len(t) for t in curve.values()), default=0),
               b_crit_seeds_lo=math.nan, b_crit_seeds_hi=math.nan, b_crit_resid_lo=math.nan,
               b_crit_resid_hi=math.nan, jackknife_lo=math.nan, jackknife_hi=math.nan, fragile=False,
               faster_than_perfect=len(faster), faster_pairs="; ".join(faster))
    if math.isnan(b_crit) or resamples < 1:
        return out
    rng = np.random.default_rng(seed)
    by_seeds = _percentiles(seed_bootstrap(curve, resamples, rng), confidence)
    by_resid = _percentiles(residual_bootstrap(sizes, steps, bound, resamples, rng), confidence)
    (out["b_crit_seeds_lo"], out["b_crit_seeds_hi"]), (out["b_crit_resid_lo"], out["b_crit_resid_hi"]) = \
        by_seeds[1], by_resid[1]
    both = np.stack([by_seeds, by_resid])
    (out["s_min_lo"], out["b_crit_lo"]), (out["s_min_hi"], out["b_crit_hi"]) = \
        np.nanmin(both[:, :, 0], axis=0), np.nanmax(both[:, :, 1], axis=0)
    jack = jackknife(sizes, steps, bound)
    if len(jack) >= 2:  # one refit (the others left too few exact medians) says little
        out["jackknife_lo"], out["jackknife_hi"] = min(jack), max(jack)
        out["fragile"] = bool(min(jack) < out["b_crit_lo"] or max(jack) > out["b_crit_hi"])
    return out

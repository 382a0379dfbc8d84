"""Statistics over seeds: Student-t intervals of means, and which cells of a row are best or tied.

Seeds are few (3–10), so a percentile bootstrap of the mean would return roughly [min, max] with
far less than its nominal coverage; the t-interval is honest for small samples of roughly normal
values. "Best" is a claim about a difference, so it is tested: the same seed means the same data
order and initialization for every optimizer, so the cells of a row are compared by a paired
t-test over seeds (``scipy.stats.ttest_rel``) against the row's best-mean cell, with Holm's
step-down correction across the row. A cell the test cannot separate from the best is *tied*.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats as sps


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and its Student-t interval (NaNs dropped). One value: the mean and no interval (NaN)."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) == 1:
        return mean, math.nan, math.nan
    half = float(sps.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm-adjusted p-values: sorted ascending, p_(i) × (m − i + 1), made monotone, capped at 1.
    A hypothesis is rejected at level α exactly when its adjusted p-value is ≤ α."""
    p = np.asarray(list(pvalues), dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = scaled
    return out


def paired_p(a: pd.Series, b: pd.Series) -> float:
    """Two-sided paired t-test p-value over the seeds both hold. Fewer than two pairs cannot
    separate anything (p = 1), nor can identical values (p = 1); the same nonzero difference on
    every seed is as consistent as a difference gets (p = 0; scipy would divide by zero)."""
    pair = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(pair) < 2:
        return 1.0
    diff = (pair.iloc[:, 0] - pair.iloc[:, 1]).to_numpy()
    if np.ptp(diff) <= 1e-12 * np.abs(pair.to_numpy()).max():  # the same difference on every seed
        return 1.0 if np.abs(diff).max() <= 1e-12 * np.abs(pair.to_numpy()).max() else 0.0
    p = float(sps.ttest_rel(pair.iloc[:, 0], pair.iloc[:, 1]).pvalue)
    return 1.0 if math.isnan(p) else p


def compare_to_best(samples: Mapping[object, pd.Series], maximize: bool, alpha: float = 0.05,
                    center: Callable[[pd.Series], float] = pd.Series.mean) -> pd.DataFrame:
    """Per candidate (its values indexed by seed): ``mean`` (its ``center``, the mean unless given),
    ``best`` (the best center), ``tied_best`` (not separable from the best: Holm-adjusted paired
    p ≥ ``alpha``) and ``p_holm``."""
    keys = list(samples)
    if not keys:
        return pd.DataFrame(columns=["mean", "best", "tied_best", "p_holm"])
    means = pd.Series({k: float(center(samples[k])) for k in keys})
    best = means.idxmax() if maximize else means.idxmin()
    others = [k for k in keys if k != best]
    adjusted = dict(zip(others, holm(paired_p(samples[k], samples[best]) for k in others)))
    out = pd.DataFrame({"mean": means, "best": [k == best for k in keys],
                        "p_holm": [adjusted.get(k, math.nan) for k in keys]}, index=keys)
    out["tied_best"] = out["p_holm"] >= alpha
    return out


def tied_ranks(values: pd.DataFrame, tied: pd.DataFrame, maximize: bool = False) -> pd.DataFrame:
    """Rank the columns of each row (1 = best, NaN last); a cell tied with the row's best shares its
    rank 1, the others follow by their values (ties share the lower rank). A row with no value at
    all ranks no one (NaN)."""
    best = values.max(axis=1) if maximize else values.min(axis=1)
    score = values.mask(tied.reindex_like(values).fillna(False).astype(bool), best, axis=0)
    r = score.rank(axis=1, ascending=not maximize, method="min", na_option="bottom")
    return r.where(values.notna().any(axis=1), axis=0)

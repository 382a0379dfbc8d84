"""The fits of the batch-size science, per task and optimizer: the critical batch size
(``batch_scaling``, :mod:`suite.report.stats.critical_batch` does the math) and how the reported
lr moves with the batch size (``lr_scaling``). Both read the target part of a study only (cells
trained with a target, contract: the protocol is derived from the run's config), since both are
statements about steps to target. Their CSV columns are fixed (others read them)."""
from __future__ import annotations

import math

import pandas as pd

from suite.report.data.to_target import seeds_of
from suite.report.stats import batch_science
from suite.report.stats.bounds import Seeds, censored_median
from suite.report.stats.critical_batch import critical_batch
from suite.report.tables.comparison import optimizer_order
from suite.report.tables.render import Table, fmt, plain_table
from suite.report.tables.tuning import flags

BATCH_SCALING = ("optimizer", "b_crit", "b_crit_lo", "b_crit_hi", "b_crit_relation", "s_min", "s_min_lo", "s_min_hi",
                 "e_min", "fit_rmse_log", "n_batch_sizes", "censored", "failed", "b_min", "b_max", "n_tunings",
                 "b_crit_seeds_lo", "b_crit_seeds_hi", "b_crit_resid_lo", "b_crit_resid_hi", "jackknife_lo",
                 "jackknife_hi", "fragile", "faster_than_perfect", "faster_pairs")
LR_SCALING = ("optimizer", "slope", "slope_lo", "slope_hi", "b_max_used", "n_batch_sizes")

Curves = dict[str, dict[float, list[Seeds]]]  # optimizer -> batch size -> one Seeds per tuning


def primary(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells of the primary tuning (where cells carry one line per re-tuning, ``retune`` 0)."""
    return cells[cells["retune"].fillna(0) == 0] if "retune" in cells else cells


def seed_curves(cells: pd.DataFrame, runs: pd.DataFrame) -> Curves:
    """Per optimizer and batch size, the seeds of each tuning: the primary first, then every
    re-tuning (cells with a ``retune`` > 0, where the cells carry one line per cell and re-tuning)."""
    by_id = runs.set_index("run_id")
    order = cells["retune"].fillna(0) if "retune" in cells else pd.Series(0, index=cells.index)
    out: Curves = {}
    for i in order.sort_values(kind="stable").index:
        line = cells.loc[i]
        seeds = seeds_of(by_id.loc[line["run_ids"].split(",")])
        out.setdefault(line["optimizer"], {}).setdefault(float(line["batch_size"]), []).append(seeds)
    return out


def batch_scaling(curves: Curves, resamples: int, confidence: float, seed: int) -> pd.DataFrame:
    """One critical-batch fit per optimizer (:data:`BATCH_SCALING` columns)."""
    lines = [{"optimizer": o, **critical_batch(curves[o], resamples, confidence, seed)} for o in optimizer_order(curves)]
    return pd.DataFrame(lines, columns=list(BATCH_SCALING))


def bounded(value: float, b_min: float, b_max: float, kind: str = "count") -> str:
    """A B_crit (or an interval end) beyond the batch sizes measured is a bound, not a number."""
    if math.isnan(value):
        return "—"
    return f"> {fmt(b_max, kind)}" if value > b_max else f"< {fmt(b_min, kind)}" if value < b_min else fmt(value, kind)


def b_crit_text(f) -> str:
    """``B_crit [lo, hi]`` with every number outside the measured batch sizes shown as a bound."""
    point = bounded(f["b_crit"], f["b_min"], f["b_max"])
    if math.isnan(f["b_crit_lo"]):
        return point
    return f"{point} [{bounded(f['b_crit_lo'], f['b_min'], f['b_max'])}, {bounded(f['b_crit_hi'], f['b_min'], f['b_max'])}]"


def _s_min_text(f) -> str:
    if f["b_crit_relation"] == ">":
        return "— (B_crit beyond the range)"  # perfect scaling throughout: only S_min·B_crit is identified
    lo = "" if math.isnan(f["s_min_lo"]) else f" [{fmt(f['s_min_lo'], 'count')}, {fmt(f['s_min_hi'], 'count')}]"
    return fmt(f["s_min"], "count") + lo


def _jackknife_text(f) -> str:
    if math.isnan(f["jackknife_lo"]):
        return "—"
    text = f"{fmt(f['jackknife_lo'], 'count')}–{fmt(f['jackknife_hi'], 'count')}"
    return text + (" fragile" if f["fragile"] else "")


def batch_scaling_table(fits: pd.DataFrame, confidence: float, resamples: int) -> Table:
    text = pd.DataFrame({
        "B_crit": [b_crit_text(f) for _, f in fits.iterrows()],
        "S_min (steps)": [_s_min_text(f) for _, f in fits.iterrows()],
        "E_min (samples)": [fmt(f["e_min"], "count") if f["b_crit_relation"] != "<" else "— (B_crit below the range)"
                            for _, f in fits.iterrows()],
        "RMSE (log steps)": fits["fit_rmse_log"].map(fmt),
        "drop-one B_crit": [_jackknife_text(f) for _, f in fits.iterrows()],
        "faster than perfect": fits["faster_than_perfect"].map(str),
        "batch sizes: exact / censored / failed": [f"{n} / {c} / {x}" for n, c, x in
                                                   fits[["n_batch_sizes", "censored", "failed"]].to_numpy()],
        "tunings": fits["n_tunings"].map(str),
    }).set_axis(pd.Index(fits["optimizer"], name="optimizer"))
    caption = (f"Critical batch size: S(B) = S_min·(1 + B_crit/B) fitted in log steps to each batch size's median "
               f"steps to target over seeds (a censored median, fewer than half the seeds reached, is a lower bound the "
               f"curve must pass above; a median most seeds failed to reach by diverging is left out); [{confidence:.0%} interval spanning two bootstraps of {resamples} resamples: "
               f"over the re-tunings and seeds, and over the fit's residuals (lack of fit)]; values beyond the batch "
               f"sizes measured are bounds (> B_max, < B_min); drop-one B_crit: the range of refits leaving out one "
               f"batch size, fragile where one leaves the interval; faster than perfect: adjacent batch sizes where k× "
               f"the batch took more than k× fewer steps, which the model forbids; E_min = S_min·B_crit samples.")
    return plain_table("batch_scaling", caption, text, fits)


def exact_batches(curves: Curves) -> dict[str, set[float]]:
    """Per optimizer, the batch sizes whose primary tuning's median steps to target is exact."""
    return {o: {b for b, t in c.items() if not censored_median(t[0])[1]} for o, c in curves.items()}


def lr_scaling(cells: pd.DataFrame, fits: pd.DataFrame, exact: dict[str, set[float]], confidence: float
               ) -> pd.DataFrame:
    """Slope of log(reported lr) on log(B) per optimizer over its batch sizes with an exact median
    steps to target up to its fitted B_crit (all of them where it is beyond the range), leaving out lrs
    at an edge of their search range, registry-default lrs and lrs of cells whose tuning never
    reached the target; "not enough points" (NaN) below
    :data:`batch_science.MIN_LR_POINTS` batch sizes."""
    fit = fits.set_index("optimizer") if len(fits) else pd.DataFrame(columns=["b_crit"])
    lines = []
    for name in optimizer_order(cells["optimizer"]):
        c = cells[(cells["optimizer"] == name) & cells["batch_size"].astype(float).isin(exact.get(name, set()))]
        c = c[~flags(c, "edge") & ~flags(c, "lr_fallback") & ~flags(c, "lr_unreached")]
        limit = fit["b_crit"].get(name, math.nan)
        used = c if math.isnan(limit) else c[c["batch_size"] <= limit]
        slope = batch_science.lr_slope(used["batch_size"], used["lr"], confidence)
        lines.append((name, *slope, float(used["batch_size"].max()) if len(used) else math.nan, len(used)))
    return pd.DataFrame(lines, columns=list(LR_SCALING))


def lr_scaling_table(slopes: pd.DataFrame, confidence: float) -> Table:
    enough = f"not enough points (fewer than {batch_science.MIN_LR_POINTS})"
    text = pd.DataFrame({
        "slope of log lr on log B": [enough if math.isnan(s) else f"{fmt(s)} [{fmt(lo)}, {fmt(hi)}]"
                                     for s, lo, hi in slopes[["slope", "slope_lo", "slope_hi"]].to_numpy()],
        "largest batch used": slopes["b_max_used"].map(lambda v: fmt(v, "count")),
        "batch sizes": slopes["n_batch_sizes"].map(str),
    }).set_axis(pd.Index(slopes["optimizer"], name="optimizer"))
    caption = (f"How the reported lr moves with the batch size: least-squares slope of log lr on log B over the batch "
               f"sizes whose median steps to target is not censored, up to the fitted B_crit (edge-of-range and "
               f"registry-default lrs left out), [{confidence:.0%} t-interval], only from "
               f"{batch_science.MIN_LR_POINTS} or more batch sizes. Linear rule: slope 1 (SGD, momentum; Goyal et "
               f"al. 2017); square-root rule: slope 0.5 (Adam family; Malladi et al. 2022).")
    return plain_table("lr_scaling", caption, text, slopes)

"""The gradient noise scale in the report: every evaluation of the reported configurations where it
was measured (``noise_scale``; runs of abandoned configurations are not among them, since only the
cells' own runs are read), a summary per optimizer with the two-batch estimator's error against the
exact value, and the comparison the theory makes: McCandlish et al. (2018) predict that plain SGD's
critical batch B_crit is about the noise scale B_noise = tr(HΣ)/(GᵀHG) (B_simple = tr(Σ)/|G|² is the
same with H ∝ I, which on a conditioned problem it is not)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from suite.report.tables.comparison import optimizer_order
from suite.report.tables.render import Table, fmt, plain_table
from suite.types import NOISE_COLUMNS

NOISE_SCALE = ("optimizer", "batch_size", "seed", "step", "train_loss", *NOISE_COLUMNS, "diverged")
PREDICTED_FOR = "sgd"  # the optimizer McCandlish et al.'s B_crit ≈ B_noise is derived for


def run_ids(cells: pd.DataFrame) -> set[str]:
    return set(",".join(cells["run_ids"]).split(",")) if len(cells) else set()


def noise_scale(rows: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Every evaluation of the cells' runs where a noise scale was measured (:data:`NOISE_SCALE`)."""
    data = rows[rows["run_id"].isin(run_ids(cells))]
    data = data[data[list(NOISE_COLUMNS)].notna().any(axis=1)]
    rank = {o: i for i, o in enumerate(optimizer_order(data["optimizer"]))}
    data = data.assign(_o=data["optimizer"].map(rank)).sort_values(["_o", "batch_size", "seed", "step"])
    return data[list(NOISE_SCALE)].reset_index(drop=True)


def estimator_error(noise: pd.DataFrame) -> pd.Series:
    """|estimate / exact − 1| at every evaluation that has both (a negative estimate included)."""
    both = noise[noise["b_simple_est"].notna() & (noise["b_simple_exact"] > 0)]
    return (both["b_simple_est"] / both["b_simple_exact"] - 1).abs()


def noise_scale_table(noise: pd.DataFrame) -> Table:
    """Summary per optimizer (the CSV holds every evaluation)."""
    g = noise.groupby("optimizer", sort=False)
    err = estimator_error(noise).groupby(noise["optimizer"]).median()
    text = pd.DataFrame({
        "evaluations": g.size().map(str),
        "B_noise exact (median)": g["b_noise_exact"].median().map(fmt),
        "B_simple exact (median)": g["b_simple_exact"].median().map(fmt),
        "B_simple estimate (median)": g["b_simple_est"].median().map(fmt),
        "estimate's median error": err.reindex(g.size().index).map(lambda v: "—" if math.isnan(v) else f"{v:.1%}"),
        "negative estimates": g["b_simple_est"].agg(lambda s: int((s <= 0).sum())).map(str)})
    text.index.name = "optimizer"
    caption = ("Gradient noise scale at the evaluations of the reported runs (McCandlish et al. 2018): B_noise = "
               "tr(HΣ)/(GᵀHG) exact where the Hessian H is small enough to compute, B_simple = tr(Σ)/|G|² exact from "
               "per-example gradients and by the two-batch-size estimator (batch pairs drawn until its relative "
               "standard error is 5% or its budget is spent); the estimator's median per-evaluation error against the "
               "exact B_simple; estimates ≤ 0 counted (kept, not dropped). The CSV has every evaluation.")
    return plain_table("noise_scale", caption, text, noise)


def noise_at_target(cells: pd.DataFrame, runs: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer: the median noise scales at the first evaluation at or after each reported run's
    steps to target (the runs that reached it)."""
    hit = runs[runs["run_id"].isin(run_ids(cells)) & runs["reached"]].set_index("run_id")["steps_to_target"]
    at = rows[rows["run_id"].isin(hit.index)]
    at = at[at["step"] >= at["run_id"].map(hit)].sort_values("step").groupby("run_id").head(1)
    return at.groupby("optimizer")[list(NOISE_COLUMNS)].median()


def _verdict(b_crit: float, lo: float, hi: float, noise: float, name: str) -> str:
    if math.isnan(lo):
        return f"B_crit/{name} = {b_crit / noise:.2g} (no interval)"
    if lo <= noise <= hi:
        return f"agrees: {name} lies within B_crit's interval"
    return f"does not agree: B_crit is {b_crit / noise:.2g}× {name}, which lies outside its interval"


NOISE_NAMES = {"b_noise_exact": ("B_noise", "B_noise (exact)", "B_noise"),
               "b_simple_exact": ("B_simple", "B_simple (exact; B_noise not measured)", "B_simple exact"),
               "b_simple_est": ("B_simple", "B_simple (two-batch estimate; B_noise not measured)", "B_simple estimate")}


def comparison_lines(fits: pd.DataFrame, at_target: pd.DataFrame, b_crit_text) -> list[str]:
    """One line per optimizer with a fit and a noise scale at the target, the predicted one first:
    against B_noise where measured, else the best B_simple there is (exact, else the estimate)."""
    lines = []
    order = sorted(fits.index, key=lambda i: fits.at[i, "optimizer"] != PREDICTED_FOR)
    for _, f in fits.loc[order].iterrows():
        name = f["optimizer"]
        if name not in at_target.index or math.isnan(f["b_crit"]):
            continue
        noise = at_target.loc[name]
        column = next((c for c in NOISE_NAMES if not math.isnan(noise[c])), None)
        if column is None:
            continue
        short, what, _ = NOISE_NAMES[column]
        role = "the theory's case" if name == PREDICTED_FOR else "no prediction; for reference"
        others = ", ".join(f"{NOISE_NAMES[c][2]} {fmt(noise[c])}" for c in NOISE_NAMES
                           if c != column and not math.isnan(noise[c]))
        lines.append(f"- {name} ({role}): B_crit = {b_crit_text(f)} vs {what} at the target = {fmt(noise[column])}: "
                     f"{_verdict(f['b_crit'], f['b_crit_lo'], f['b_crit_hi'], noise[column], short)}"
                     f"{'' if f['b_crit_relation'] == '' else ' (B_crit is a bound: compare with care)'}"
                     f"{f' ({others})' if others else ''}.")
    return lines


def estimator_line(noise: pd.DataFrame) -> str | None:
    err = estimator_error(noise)
    if err.empty:
        return None
    negative = int((noise["b_simple_est"] <= 0).sum())
    return (f"The two-batch estimator against the exact B_simple: median per-evaluation error "
            f"{float(np.median(err)):.1%} over {len(err)} evaluations (90th percentile "
            f"{float(np.quantile(err, 0.9)):.1%}); {negative} of {int(noise['b_simple_est'].notna().sum())} "
            f"estimates ≤ 0, kept and drawn at the axis edge.")

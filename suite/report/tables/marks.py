"""Which cells of a table row are best or tied with the best.

Only comparable cells compete (:func:`suite.report.tables.cells.cell_text`: every seed finished,
and for counts to the target the median exists). The best is the best mean (final metrics) or the
least median (counts to the target); a cell that a paired t-test over seeds, Holm-corrected
across the row, cannot separate from it is tied (:func:`suite.report.stats.seeds.compare_to_best`).
Counts are compared as log counts with censored seeds at their cap
(:mod:`suite.report.stats.censored`): that understates a censored cell's counts, so it can only tie
more cells with the best, except where the best itself has censored seeds, whose lead it would
overstate: then no cell is separated from that best. Where a value lies within its metric's resolution of the
floor (:mod:`suite.report.stats.resolution`), the row's cells at the floor are equal and none is
marked.
"""
from __future__ import annotations

import pandas as pd

from suite.report.stats.censored import log_counts, reach_median
from suite.report.stats.resolution import at_floor, floor
from suite.report.stats.seeds import compare_to_best
from suite.report.tables.cells import cell_text


def seed_values(cells: pd.DataFrame, runs: pd.DataFrame, column: str) -> dict:
    """Per cell (by index): its runs' ``column`` indexed by seed."""
    ids = cells["run_ids"].str.split(",").explode()
    values = runs.set_index("run_id").loc[ids.to_numpy(), ["seed", column]].assign(cell=ids.index.to_numpy())
    grouped = values.groupby(["cell", "seed"])[column].mean()
    return {i: grouped.xs(i, level="cell") for i in cells.index}


def log_count_values(cells: pd.DataFrame, runs: pd.DataFrame, column: str) -> dict:
    """Per cell: log of each seed's count to the target, a seed that did not reach it at its cap
    (what it ran: its steps, epochs, samples or training-clock seconds)."""
    ran = {"steps_to_target": runs["steps"], "epochs_to_target": runs["epochs"],
           "samples_to_target": runs["steps"] * runs["batch_size"], "seconds_to_target": runs["time_s"]}[column]
    counts, caps = seed_values(cells, runs, column), seed_values(cells, runs.assign(_ran=ran), "_ran")
    return {i: pd.Series(log_counts(counts[i], caps[i]), index=counts[i].index) for i in counts}


def _censored_best(flags: pd.DataFrame, cells: pd.DataFrame, runs: pd.DataFrame) -> bool:
    """Whether the best cell of a row has seeds that did not reach the target: entered at the cap,
    they understate its counts and so overstate its lead over every other cell."""
    best = flags.index[flags["best"]]
    return bool(len(best)) and not seed_values(cells.loc[best], runs, "reached")[best[0]].astype(bool).all()


def floor_flags(cells: pd.DataFrame, column: str) -> pd.Series:
    """Per cell: its value lies within its metric's resolution of the floor."""
    return pd.Series([at_floor(line[column], floor(column, line.get("dtype"), line.get("optimal_loss")))
                      for _, line in cells.iterrows()], index=cells.index, dtype=bool)


def mark_cells(cells: pd.DataFrame, runs: pd.DataFrame | None, column: str, style: str,
               maximize: bool | None, alpha: float = 0.05) -> pd.DataFrame:
    """Per cell: ``eligible`` (comparable), ``at_floor``, ``best`` and ``tied_best``.
    ``maximize=None`` marks nothing; without ``runs`` only the best is marked."""
    eligible = pd.Series([cell_text(line, column, style)[1] for _, line in cells.iterrows()], index=cells.index,
                         dtype=bool)
    floored = floor_flags(cells, column) & eligible if style == "final" else pd.Series(False, index=cells.index)
    out = pd.DataFrame({"eligible": eligible, "at_floor": floored, "best": False, "tied_best": False},
                       index=cells.index)
    if maximize is None or not eligible.any():
        return out
    counts = style == "target"
    if runs is None:
        samples = {i: pd.Series([v]) for i, v in cells.loc[eligible, column].items()}
    else:
        samples = (log_count_values if counts else seed_values)(cells[eligible], runs, column)
    for _, row in cells[eligible].groupby("batch_label", sort=False):
        if floored[row.index].any():
            continue  # values at the floor are equal: nothing in this row is better than them
        flags = compare_to_best({i: samples[i] for i in row.index}, maximize, alpha,
                                center=reach_median if counts else pd.Series.mean)
        if counts and runs is not None and _censored_best(flags, cells, runs):
            flags["tied_best"] = True  # its lead would be overstated: separate no one from it
        out.loc[flags.index, "best"] = flags["best"].to_numpy()
        out.loc[flags.index, "tied_best"] = (flags["tied_best"] & ~flags["best"]).to_numpy() & (runs is not None)
    return out

"""Report tables: optimizer × batch-size pivots, rankings, the cross-task summary and the tuning
table, built from :mod:`suite.report.data.metrics` frames only (rendered by
:mod:`suite.report.tables.render`).

Orientation: one row per batch size, one column per optimizer, so "best cell per row" is the best
optimizer at that batch size. A cell shows the mean over seeds and, with more than one seed, its
Student-t interval ``[lo, hi]``. A cell is eligible for *best* only when every seed finished (no
divergence, and for to-target tables every seed reached the target). Among the eligible cells of a
row, the best mean is **bold**; a cell a paired t-test over seeds (Holm-corrected across the row)
cannot separate from it is *tied* (bold, "≈"). CSV files hold the numbers in tidy form (one line
per cell, with the interval, the counts and the ``best``/``tied_best`` flags).
"""
from __future__ import annotations

import math

import pandas as pd

from suite.optim.registry import OPTIMIZERS
from suite.report.data.metrics import performance_profile
from suite.report.stats.seeds import compare_to_best, tied_ranks
from suite.report.tables.render import Table, fmt, interval

EDGE_MARK, FALLBACK_MARK, UNREACHED_MARK = " †", " ‡", " §"


def kind_of(column: str) -> str:
    if column.endswith("accuracy"):
        return "accuracy"
    return "count" if column in ("steps_to_target", "samples_to_target") else "num"


def with_ci(line, column: str) -> str:
    return interval(line[column], line[f"{column}_lo"], line[f"{column}_hi"], kind_of(column))


def _final_cell(line, column: str) -> tuple[str, bool]:
    n, d = line["n_runs"], line["n_diverged"]
    if d == n:
        return "diverged", False
    text = with_ci(line, column)
    return (text, True) if d == 0 else (f"{text} ({d}/{n} diverged)", False)


def censored_text(line) -> str:
    """A cell none of whose seeds reached the target: why, and within how many steps."""
    n, d = line["n_runs"], line["n_diverged"]
    if d == n:
        return "diverged"
    cap, why = line.get("cap_steps", math.nan), line.get("censor_reasons", "cap")
    stopped = ", ".join(r for r in str(why).split(", ") if r not in ("cap", "diverged"))  # e.g. time limit
    if pd.isna(cap):
        text = "censored"
    elif stopped:
        text = f"censored ({stopped}; at most {fmt(cap, 'count')} steps)"
    else:
        text = f"censored (cap {fmt(cap, 'count')} steps)"
    return text + (f" ({d}/{n} diverged)" if d else "")


def _target_cell(line, column: str) -> tuple[str, bool]:
    n, k = line["n_runs"], line["n_reached"]
    if k == 0:
        return censored_text(line), False
    text = with_ci(line, column)
    return (text, True) if k == n else (f"{text} ({k}/{n} reached)", False)


def _plain_cell(line, column: str) -> tuple[str, bool]:
    return fmt(line[column], kind_of(column)), not math.isnan(line[column])


CELL_STYLES = {"final": _final_cell, "target": _target_cell, "plain": _plain_cell}


def optimizer_order(names) -> list[str]:
    """Registry order (the README's order), then any other names alphabetically."""
    names = set(names)
    return [o for o in OPTIMIZERS if o in names] + sorted(names - set(OPTIMIZERS))


def batch_order(cells: pd.DataFrame) -> list[str]:
    keys = ["batch_size", "accumulation_steps", "sampling", "accumulation_reduction"]
    return list(cells.sort_values(keys)["batch_label"].drop_duplicates())


def seed_values(cells: pd.DataFrame, runs: pd.DataFrame, column: str) -> dict:
    """Per cell (by index): its runs' ``column`` indexed by seed."""
    ids = cells["run_ids"].str.split(",").explode()
    values = runs.set_index("run_id").loc[ids.to_numpy(), ["seed", column]].assign(cell=ids.index.to_numpy())
    grouped = values.groupby(["cell", "seed"])[column].mean()
    return {i: grouped.xs(i, level="cell") for i in cells.index}


def mark_cells(cells: pd.DataFrame, runs: pd.DataFrame | None, column: str, style: str,
               maximize: bool | None, alpha: float = 0.05) -> pd.DataFrame:
    """Per cell: ``eligible``, ``best`` (the best mean of its row among eligible cells) and
    ``tied_best`` (a paired t-test over seeds, Holm-corrected across the row, cannot separate it
    from the best). ``maximize=None`` marks nothing; without ``runs`` only the best is marked."""
    eligible = pd.Series([CELL_STYLES[style](line, column)[1] for _, line in cells.iterrows()], index=cells.index,
                         dtype=bool)
    out = pd.DataFrame({"eligible": eligible, "best": False, "tied_best": False}, index=cells.index)
    if maximize is None or not eligible.any():
        return out
    samples = seed_values(cells[eligible], runs, column) if runs is not None else \
        {i: pd.Series([v]) for i, v in cells.loc[eligible, column].items()}
    for _, row in cells[eligible].groupby("batch_label", sort=False):
        flags = compare_to_best({i: samples[i] for i in row.index}, maximize, alpha)
        out.loc[flags.index, "best"] = flags["best"].to_numpy()
        out.loc[flags.index, "tied_best"] = (flags["tied_best"] & ~flags["best"]).to_numpy() & (runs is not None)
    return out


def _flag(line) -> str:
    return (EDGE_MARK if line.get("edge") else "") + (FALLBACK_MARK if line.get("lr_fallback") else "") + \
        (UNREACHED_MARK if line.get("lr_unreached") else "")


def pivot(cells: pd.DataFrame, column: str, name: str, caption: str, style: str = "final",
          maximize: bool | None = None, runs: pd.DataFrame | None = None, alpha: float = 0.05) -> Table:
    """Rows = batch sizes, columns = optimizers; ``maximize=None`` marks no best cell."""
    rows, cols = batch_order(cells), optimizer_order(cells["optimizer"])
    text = pd.DataFrame("—", index=pd.Index(rows, name="batch size"), columns=cols)
    bold = pd.DataFrame(False, index=text.index, columns=cols)
    marks = mark_cells(cells, runs, column, style, maximize, alpha)
    for i, line in cells.iterrows():
        cell = CELL_STYLES[style](line, column)[0] + _flag(line)
        at = (line["batch_label"], line["optimizer"])
        text.loc[at] = f"≈ {cell}" if marks.loc[i, "tied_best"] else cell
        bold.loc[at] = bool(marks.loc[i, "best"] or marks.loc[i, "tied_best"])
    data = cells[["batch_label", "batch_size", "micro_batch", "accumulation_steps", "optimizer", "lr", "n_runs",
                  "n_diverged", "n_reached"]].copy()
    for extra in (f"{column}", f"{column}_lo", f"{column}_hi", *(("to_target_bracket", "n_censored", "cap_steps")
                                                                 if style == "target" else ())):
        if extra in cells:
            data[extra] = cells[extra]
    data["best"], data["tied_best"] = marks["best"], marks["tied_best"]
    if "edge" in cells and cells["edge"].fillna("").astype(bool).any():
        caption += " † the tuned lr still sits at an edge of its search range (see the tuning table)."
    if "lr_fallback" in cells and cells["lr_fallback"].fillna(False).astype(bool).any():
        caption += " ‡ registry-default lr: every tuning trial diverged."
    if "lr_unreached" in cells and cells["lr_unreached"].fillna(False).astype(bool).any():
        caption += " § no tuning trial reached the target: the lr of the trial closest to it."
    return Table(name, caption, text, bold, data.reset_index(drop=True))


def marks_note(alpha: float, n_seeds: int = 2) -> str:
    note = (f"bold = best mean per batch size; ≈ = tied with it (paired t-test over seeds, Holm-corrected across "
            f"the row, α = {alpha:g})")
    return note + ("; with one seed no difference can be tested, so every complete cell is tied" if n_seeds < 2
                   else "")


def _marked_pivot(cells, runs, column, style, maximize, alpha):
    """The eligible values and the best-or-tied flags as batch size × optimizer frames."""
    marks = mark_cells(cells, runs, column, style, maximize, alpha)
    frame = cells.assign(v=cells[column].where(marks["eligible"]), t=marks["best"] | marks["tied_best"])
    return (frame.pivot(index="batch_label", columns="optimizer", values="v"),
            frame.pivot(index="batch_label", columns="optimizer", values="t"))


def ranking(cells: pd.DataFrame, primary: str, maximize: bool, trials: pd.DataFrame | None,
            runs: pd.DataFrame | None = None, alpha: float = 0.05) -> Table:
    """Per optimizer: mean rank over batch sizes (primary final metric; steps-to-target), wins.
    Cells tied with a row's best share its rank 1."""
    score, tied = _marked_pivot(cells, runs, primary, "final", maximize, alpha)
    r = tied_ranks(score, tied, maximize)
    steps, steps_tied = _marked_pivot(cells, runs, "steps_to_target", "target", False, alpha)
    label = primary.replace("_", " ")
    data = pd.DataFrame({
        f"mean rank ({label})": r.mean(), "wins": (r == 1).sum(),
        "mean rank (steps to target)": tied_ranks(steps, steps_tied).mean() if steps.notna().any().any()
        else math.nan,
        "cells": cells.groupby("optimizer").size(),
        "diverged final runs": cells.groupby("optimizer")["n_diverged"].sum(),
    })
    if trials is not None and len(trials):
        by = trials.groupby("optimizer")
        data["lrs diverged (mean fraction)"] = by["frac_lrs_diverged"].mean()
        data["lr sensitivity (median decades)"] = by["sensitivity_decades"].median()
    data = data.sort_values([f"mean rank ({label})", "mean rank (steps to target)"]).rename_axis("optimizer")
    text = data.apply(lambda col: col.map(lambda x: fmt(x, "count" if col.name in ("wins", "cells") else "num")))
    best_is_max = {"wins": True, "lr sensitivity (median decades)": True}
    marked = [c for c in data if c.startswith("mean rank") or c in best_is_max]
    bold = pd.DataFrame(False, index=data.index, columns=data.columns)
    for c in marked:
        best = data[c].max() if best_is_max.get(c) else data[c].min()
        bold[c] = data[c].eq(best) & data[c].notna()
    caption = (f"Optimizers by mean rank over batch sizes on {label} (1 = best; cells tied with a row's best by a "
               f"paired t-test over seeds with Holm correction, α = {alpha:g}, share rank 1; a cell with a diverged "
               f"seed ranks last) and on steps to target; wins = batch sizes where it is best or tied with the best; "
               f"lr sensitivity = median over its cells of the width (decades) of the lr range whose tuning trials "
               f"score within the tolerance of the cell's best on the tuner's objective (the tuning table); "
               f"bold = best in each column.")
    return Table("ranking", caption, text, bold, data.reset_index())


def summary(rank_tables: dict[str, Table], primary: dict[str, str]) -> Table:
    """Cross-task: rows = tasks (+ the mean), columns = optimizers, values = mean rank."""
    data = pd.DataFrame({task: t.data.set_index("optimizer")[f"mean rank ({primary[task].replace('_', ' ')})"]
                         for task, t in rank_tables.items()}).T
    data = data[optimizer_order(data.columns)]
    data.loc["mean over tasks"] = data.mean()
    data.index.name = "task"
    text = data.apply(lambda col: col.map(fmt))
    bold = _lowest(data)
    caption = ("Mean rank of each optimizer over batch sizes per task, on each task's primary final metric "
               "(1 = best; ties with a row's best share its rank); bold = lowest mean rank per task (a summary, "
               "not a test).")
    return Table("summary_ranks", caption, text, bold, data.reset_index())


def _lowest(data: pd.DataFrame, maximize: bool = False) -> pd.DataFrame:
    target = data.max(axis=1) if maximize else data.min(axis=1)
    return data.eq(target, axis=0) & data.notna()


def profile(problems: pd.DataFrame, taus=(1, 1.25, 1.5, 2, 4, 8, 16)) -> tuple[Table, pd.DataFrame]:
    """Performance profile of steps-to-target over all (task, batch size) problems."""
    cost = problems.pivot_table(index=["task_label", "batch_label"], columns="optimizer",
                                values="steps_to_target", dropna=False)
    cost = cost[optimizer_order(cost.columns)].dropna(how="all")  # a problem nobody solved compares nothing
    data = performance_profile(cost, taus)
    text = data.apply(lambda col: col.map(lambda x: f"{x:.2f}"))
    text.index = [f"τ = {t:g}" for t in data.index]
    text.index.name = "τ"
    bold = _lowest(data, maximize=True)
    bold.index = text.index
    caption = (f"Performance profile on steps-to-target over {len(cost)} (task, batch size) problems: the fraction "
               f"of problems an optimizer solves within τ × the best optimizer's steps (censored cells count as "
               f"unsolved); bold = highest per row.")
    return Table("performance_profile", caption, text, bold, data.reset_index()), cost

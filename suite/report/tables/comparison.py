"""Report tables: optimizer × batch-size pivots, rankings, the cross-task summary and the performance
profile, built from :mod:`suite.report.data.metrics` frames only (rendered by
:mod:`suite.report.tables.render`). Every table belongs to one protocol part: its cells are that
part's cells.

Orientation: one row per batch size, one column per optimizer, so "best cell per row" is the best
optimizer at that batch size. What a cell shows and whether it may be compared:
:mod:`suite.report.tables.cells`; which cells are best or tied: :mod:`suite.report.tables.marks`
(bold, and "≈" for a tie). CSV files hold the numbers in tidy form (one line per cell, with the
interval, the counts and the ``best``/``tied_best``/``at_floor`` flags).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from suite.optim.registry import OPTIMIZERS
from suite.report.data.metrics import performance_profile
from suite.report.stats.seeds import tied_ranks
from suite.report.stats.resolution import floor
from suite.report.tables.cells import cell_text, flag_marks, marks_legend
from suite.report.tables.marks import mark_cells
from suite.report.tables.render import Table, fmt



@dataclass(frozen=True)
class Score:
    """What a ranking compares: a cell column, how its cells read (``final``/``target``), which way is better."""

    column: str
    style: str
    maximize: bool

    @property
    def label(self) -> str:
        return self.column.replace("_", " ")


def optimizer_order(names) -> list[str]:
    """Registry order (the README's order), then any other names alphabetically."""
    names = set(names)
    return [o for o in OPTIMIZERS if o in names] + sorted(names - set(OPTIMIZERS))


def batch_order(cells: pd.DataFrame) -> list[str]:
    keys = ["batch_size", "accumulation_steps", "sampling", "accumulation_reduction"]
    return list(cells.sort_values(keys)["batch_label"].drop_duplicates())


def pivot(cells: pd.DataFrame, column: str, name: str, caption: str, style: str = "final",
          maximize: bool | None = None, runs: pd.DataFrame | None = None, alpha: float = 0.05) -> Table:
    """Rows = batch sizes, columns = optimizers; ``maximize=None`` marks no best cell."""
    rows, cols = batch_order(cells), optimizer_order(cells["optimizer"])
    text = pd.DataFrame("—", index=pd.Index(rows, name="batch size"), columns=cols)
    bold = pd.DataFrame(False, index=text.index, columns=cols)
    marks = mark_cells(cells, runs, column, style, maximize, alpha)
    for i, line in cells.iterrows():
        cell = floor_text(line, column) if marks.at[i, "at_floor"] else cell_text(line, column, style)[0]
        at = (line["batch_label"], line["optimizer"])
        text.at[at] = f"≈ {cell}" if marks.at[i, "tied_best"] else cell
        bold.at[at] = bool(marks.at[i, "best"] or marks.at[i, "tied_best"])
    data = cells[["batch_label", "batch_size", "micro_batch", "accumulation_steps", "optimizer", "lr", "n_runs",
                  "n_diverged", "n_reached"]].copy()
    extras = (column, f"{column}_lo", f"{column}_hi", "n_collapsed", "n_failed",
              *(("to_target_bracket", "n_censored", "cap_steps", "step_cap", "to_target_censored", "to_target_coverage")
                if style == "target" else ()))
    for extra in extras:
        if extra in cells:
            data[extra] = cells[extra]
    data["best"], data["tied_best"], data["at_floor"] = marks["best"], marks["tied_best"], marks["at_floor"]
    return Table(name, caption + marks_legend(cells), text, bold, data.reset_index(drop=True))


def floor_text(line, column: str) -> str:
    """A value within its metric's resolution of the floor: equal to every other such value."""
    return f"at floor (±{fmt(floor(column, line.get('dtype'), line.get('optimal_loss')))})" + flag_marks(line)


def marks_note(alpha: float, n_seeds: int = 2, best: str = "best mean") -> str:
    note = (f"bold = {best} per batch size among cells whose seeds all finished; ≈ = tied with it (paired "
            f"t-test over seeds, Holm-corrected across the row, α = {alpha:g})")
    return note + ("; with one seed no difference can be tested, so every complete cell is tied" if n_seeds < 2
                   else "")


def _marked_pivot(cells, runs, score: Score, alpha):
    """The comparable values and the best-or-tied flags (values at the floor are all equal: tied)
    as batch size × optimizer frames."""
    marks = mark_cells(cells, runs, score.column, score.style, score.maximize, alpha)
    frame = cells.assign(v=cells[score.column].where(marks["eligible"]),
                         t=marks["best"] | marks["tied_best"] | marks["at_floor"])
    return (frame.pivot(index="batch_label", columns="optimizer", values="v"),
            frame.pivot(index="batch_label", columns="optimizer", values="t"))


def ranking(cells: pd.DataFrame, scores: list[Score], trials: pd.DataFrame | None,
            runs: pd.DataFrame | None = None, alpha: float = 0.05, part: str = "") -> Table:
    """Per optimizer: mean rank over batch sizes on each score, wins on the first. Cells tied with
    a row's best share its rank 1; a cell that may not be compared (a failed seed, a censored
    median) ranks after every cell that may."""
    ranked = {}
    for score in scores:
        values, tied = _marked_pivot(cells, runs, score, alpha)
        ranked[score] = tied_ranks(values, tied, score.maximize) if values.notna().any().any() else None
    first = ranked[scores[0]]
    data = pd.DataFrame({
        **{f"mean rank ({s.label})": r.mean() if r is not None else math.nan for s, r in ranked.items()},
        "wins": (first == 1).sum() if first is not None else 0,
        "cells": cells.groupby("optimizer").size(),
        "failed final runs": cells.groupby("optimizer")["n_failed"].sum(),
    })
    if trials is not None and len(trials):
        by = trials.groupby("optimizer")
        data["lrs diverged (mean fraction)"] = by["frac_lrs_diverged"].mean()
        data["lr sensitivity (median decades)"] = by["sensitivity_decades"].median()
    data = data.sort_values([f"mean rank ({s.label})" for s in scores]).rename_axis("optimizer")
    text = data.apply(lambda col: col.map(lambda x: fmt(x, "count" if col.name in ("wins", "cells") else "num")))
    best_is_max = {"wins": True, "lr sensitivity (median decades)": True}
    marked = [c for c in data if c.startswith("mean rank") or c in best_is_max]
    bold = pd.DataFrame(False, index=data.index, columns=data.columns)
    for c in marked:
        best = data[c].max() if best_is_max.get(c) else data[c].min()
        bold[c] = data[c].eq(best) & data[c].notna()
    on = " and ".join(s.label for s in scores)
    caption = (f"{_part_prefix(part)}Optimizers by mean rank over batch sizes on {on} (1 = best; cells tied with a "
               f"row's best by a paired t-test over seeds with Holm correction, α = {alpha:g}, share rank 1; a cell "
               f"with a failed seed, or a censored median, ranks after every cell without); wins = batch sizes where "
               f"it is best or tied with the best on {scores[0].label}; lr sensitivity = median over its cells of "
               f"the width (decades) of the lr range whose tuning trials score within the tolerance of the cell's "
               f"best on the tuner's objective (the tuning table); bold = best in each column.")
    return Table("ranking", caption, text, bold, data.reset_index())


def _part_prefix(part: str) -> str:
    return f"{part.capitalize()} part: " if part else ""


def summary(rank_tables: dict[str, Table], score: dict[str, Score], part: str = "") -> Table:
    """Cross-task: rows = tasks (+ the mean), columns = optimizers, values = mean rank."""
    data = pd.DataFrame({task: t.data.set_index("optimizer")[f"mean rank ({score[task].label})"]
                         for task, t in rank_tables.items()}).T
    data = data[optimizer_order(data.columns)]
    data.loc["mean over tasks"] = data.mean()
    data.index.name = "task"
    text = data.apply(lambda col: col.map(fmt))
    bold = _lowest(data)
    on = "; ".join(sorted({f"{s.label}" for s in score.values()}))
    caption = (f"{_part_prefix(part)}Mean rank of each optimizer over batch sizes per task, on {on} (1 = best; ties "
               f"with a row's best share its rank; a cell with a failed seed ranks after every cell without); bold = "
               f"lowest mean rank per task (a summary, not a test).")
    return Table("summary_ranks", caption, text, bold, data.reset_index())


def _lowest(data: pd.DataFrame, maximize: bool = False) -> pd.DataFrame:
    target = data.max(axis=1) if maximize else data.min(axis=1)
    return data.eq(target, axis=0) & data.notna()


def problems(cells: pd.DataFrame) -> pd.DataFrame:
    """One cell per (task, optimizer, update): a batch built by accumulation (``64×16``) makes the
    same update as the plain batch (``1024``), so it is the same problem; the plain batch stands
    for it where both were run."""
    plain_first = cells.sort_values("accumulation_steps", kind="stable")
    same = ["task_label", "optimizer", "batch_size", "sampling", "accumulation_reduction"]
    return plain_first.drop_duplicates(same)


def profile(cells: pd.DataFrame, part: str = "", taus=(1, 1.25, 1.5, 2, 4, 8, 16)) -> tuple[Table, pd.DataFrame]:
    """Performance profile of the median steps-to-target over all (task, batch size) problems; a cell
    with a failed seed or a censored median counts as not solved."""
    solved = cells.assign(steps_to_target=cells["steps_to_target"].where(
        (cells["n_failed"] == 0) & ~cells["to_target_censored"].astype(bool)))
    cost = problems(solved).pivot_table(index=["task_label", "batch_size", "sampling", "accumulation_reduction"],
                                        columns="optimizer", values="steps_to_target", dropna=False)
    cost = cost[optimizer_order(cost.columns)].dropna(how="all")  # a problem nobody solved compares nothing
    data = performance_profile(cost, taus)
    text = data.apply(lambda col: col.map(lambda x: f"{x:.2f}"))
    text.index = [f"τ = {t:g}" for t in data.index]
    text.index.name = "τ"
    bold = _lowest(data, maximize=True)
    bold.index = text.index
    caption = (f"{_part_prefix(part)}Performance profile on the median steps to target over {len(cost)} (task, "
               f"batch size) problems (a batch built by accumulation is the same problem as the batch it emulates): "
               f"the fraction of problems an optimizer solves within τ × the best optimizer's steps (a censored "
               f"median or a failed seed counts as unsolved); bold = highest per row.")
    return Table("performance_profile", caption, text, bold, data.reset_index()), cost

"""Report tables: optimizer × batch-size pivots, rankings, the cross-task summary; each rendered
as Markdown, LaTeX (booktabs; a bare ``tabular`` ready for ``\\input``) and CSV.

Tables are built from :mod:`suite.report.metrics` frames only. Orientation: one row per batch size,
one column per optimizer, so "best cell per row" is the best optimizer at that batch size.
A cell shows the mean over seeds and, with more than one seed, its bootstrap 95% interval
``[lo, hi]``; a cell is only eligible for *best* when every seed finished (no divergence, and
for to-target tables every seed reached the target). CSV files hold the numbers in tidy form
(one line per cell, with the interval, the counts and the ``best`` flag), not display strings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from suite.optim.registry import OPTIMIZERS
from suite.report.metrics import performance_profile, ranks


@dataclass
class Table:
    name: str  # file stem
    caption: str  # one line: README caption and a LaTeX comment
    text: pd.DataFrame  # display strings; the index holds the row labels
    bold: pd.DataFrame  # same shape: True marks a best cell
    data: pd.DataFrame  # tidy numbers for the CSV


def fmt(x: float, kind: str = "num") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if kind == "accuracy":
        return f"{x:.3f}"
    if kind == "count":
        return f"{x:,.0f}" if float(x).is_integer() or abs(x) >= 100 else f"{x:,.1f}"
    return f"{x:.3g}"


def kind_of(column: str) -> str:
    if column.endswith("accuracy"):
        return "accuracy"
    return "count" if column in ("steps_to_target", "samples_to_target") else "num"


def with_ci(line, column: str) -> str:
    kind = kind_of(column)
    mean, lo, hi = line[column], line[f"{column}_lo"], line[f"{column}_hi"]
    if math.isnan(lo) or lo == hi:
        return fmt(mean, kind)
    return f"{fmt(mean, kind)} [{fmt(lo, kind)}, {fmt(hi, kind)}]"


def _final_cell(line, column: str) -> tuple[str, bool]:
    n, d = line["n_runs"], line["n_diverged"]
    if d == n:
        return "diverged", False
    text = with_ci(line, column)
    return (text, True) if d == 0 else (f"{text} ({d}/{n} diverged)", False)


def _target_cell(line, column: str) -> tuple[str, bool]:
    n, k = line["n_runs"], line["n_reached"]
    if k == 0:
        return ("diverged" if line["n_diverged"] == n else "not reached"), False
    text = with_ci(line, column)
    return (text, True) if k == n else (f"{text} ({k}/{n} reached)", False)


def _plain_cell(line, column: str) -> tuple[str, bool]:
    return fmt(line[column], kind_of(column)), not math.isnan(line[column])


def _lr_cell(line, column: str) -> tuple[str, bool]:
    text, ok = _plain_cell(line, column)
    return (f"{text} (default)" if line.get("lr_fallback", False) else text), ok


CELL_STYLES = {"final": _final_cell, "target": _target_cell, "plain": _plain_cell, "lr": _lr_cell}


def optimizer_order(names) -> list[str]:
    """Registry order (the README's order), then any other names alphabetically."""
    names = set(names)
    return [o for o in OPTIMIZERS if o in names] + sorted(names - set(OPTIMIZERS))


def batch_order(cells: pd.DataFrame) -> list[str]:
    keys = ["batch_size", "accumulation_steps", "sampling", "accumulation_reduction"]
    return list(cells.sort_values(keys)["batch_label"].drop_duplicates())


def pivot(cells: pd.DataFrame, column: str, name: str, caption: str, style: str = "final",
          maximize: bool | None = None) -> Table:
    """Rows = batch sizes, columns = optimizers; ``maximize=None`` marks no best cell."""
    rows, cols = batch_order(cells), optimizer_order(cells["optimizer"])
    text = pd.DataFrame("—", index=pd.Index(rows, name="batch size"), columns=cols)
    score = pd.DataFrame(math.nan, index=text.index, columns=cols)
    for _, line in cells.iterrows():
        cell, eligible = CELL_STYLES[style](line, column)
        text.loc[line["batch_label"], line["optimizer"]] = cell
        if eligible:
            score.loc[line["batch_label"], line["optimizer"]] = line[column]
    bold = _best(score, maximize)
    data = cells[["batch_label", "batch_size", "micro_batch", "accumulation_steps", "optimizer", "lr", "n_runs",
                  "n_diverged", "n_reached"]].copy()
    for suffix in ("", "_lo", "_hi"):
        if f"{column}{suffix}" in cells:
            data[f"{column}{suffix}"] = cells[f"{column}{suffix}"]
    data["best"] = [bool(bold.loc[b, o]) for b, o in zip(data["batch_label"], data["optimizer"])]
    return Table(name, caption, text, bold, data.reset_index(drop=True))


def _best(score: pd.DataFrame, maximize: bool | None) -> pd.DataFrame:
    if maximize is None:
        return score.notna() & False
    target = score.max(axis=1) if maximize else score.min(axis=1)
    return score.eq(target, axis=0) & score.notna()


def ranking(cells: pd.DataFrame, primary: str, maximize: bool, trials: pd.DataFrame | None) -> Table:
    """Per optimizer: mean rank over batch sizes (primary final metric; steps-to-target), wins."""
    complete = cells["n_diverged"] == 0
    score = cells.assign(v=cells[primary].where(complete)).pivot(index="batch_label", columns="optimizer", values="v")
    r = ranks(score, maximize)
    reached = cells["n_reached"] == cells["n_runs"]
    steps = cells.assign(v=cells["steps_to_target"].where(reached)).pivot(
        index="batch_label", columns="optimizer", values="v")
    label = primary.replace("_", " ")
    data = pd.DataFrame({
        f"mean rank ({label})": r.mean(), "wins": (r == 1).sum(),
        "mean rank (steps to target)": ranks(steps).mean() if steps.notna().any().any() else math.nan,
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
    caption = (f"Optimizers by mean rank over batch sizes on {label} (1 = best; a cell with "
               f"a diverged seed ranks last) and on steps to target; wins = batch sizes where it ranks first; "
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
    bold = _best(data, maximize=False)
    caption = ("Mean rank of each optimizer over batch sizes per task, on each task's primary final metric "
               "(1 = best); bold = best optimizer per task.")
    return Table("summary_ranks", caption, text, bold, data.reset_index())


def profile(problems: pd.DataFrame, taus=(1, 1.25, 1.5, 2, 4, 8, 16)) -> tuple[Table, pd.DataFrame]:
    """Performance profile of steps-to-target over all (task, batch size) problems."""
    cost = problems.pivot_table(index=["task_label", "batch_label"], columns="optimizer",
                                values="steps_to_target", dropna=False)
    cost = cost[optimizer_order(cost.columns)].dropna(how="all")  # a problem nobody solved compares nothing
    data = performance_profile(cost, taus)
    text = data.apply(lambda col: col.map(lambda x: f"{x:.2f}"))
    text.index = [f"τ = {t:g}" for t in data.index]
    text.index.name = "τ"
    bold = _best(data, maximize=True)
    bold.index = text.index
    caption = (f"Performance profile on steps-to-target over {len(cost)} (task, batch size) problems: the fraction "
               f"of problems an optimizer solves within τ × the best optimizer's steps; bold = best per row.")
    return Table("performance_profile", caption, text, bold, data.reset_index()), cost


def tuning(trials: pd.DataFrame, tolerance: float) -> Table:
    """Per cell: what its tuning trials say (long table: one line per optimizer and batch size)."""
    rank_b = {b: i for i, b in enumerate(batch_order(trials))}
    rank_o = {o: i for i, o in enumerate(optimizer_order(trials["optimizer"]))}
    t = trials.assign(_o=trials["optimizer"].map(rank_o), _b=trials["batch_label"].map(rank_b))
    t = t.sort_values(["_o", "_b"]).drop(columns=["_o", "_b"]).reset_index(drop=True)
    lr_range = [f"{fmt(lo)}–{fmt(hi)}" if not math.isnan(lo) else "—"
                for lo, hi in zip(t["sensitivity_low_lr"], t["sensitivity_high_lr"])]
    text = pd.DataFrame({
        "batch size": t["batch_label"], "trials": t["n_trials"].map(str), "pruned": t["n_pruned"].map(str),
        "lrs diverged": t["frac_lrs_diverged"].map(lambda x: f"{x:.0%}" if not math.isnan(x) else "—"),
        "largest stable lr": t["largest_stable_lr"].map(fmt), "best trial lr": t["best_trial_lr"].map(fmt),
        f"within {tolerance:.0%} (decades)": t["sensitivity_decades"].map(fmt), "lr range": lr_range,
    })
    text.index = pd.Index(t["optimizer"], name="optimizer")
    caption = (f"Tuning trials per cell: fraction of tried lrs that diverged, the largest lr that did not, the best "
               f"trial's lr, and the width (decades) of the contiguous lr range whose final validation loss is within "
               f"{tolerance:.0%} of the best (resolution = trial spacing).")
    return Table("tuning", caption, text, pd.DataFrame(False, index=text.index, columns=text.columns), t)


# --- rendering --------------------------------------------------------------------------------

def markdown(t: Table) -> str:
    def cell(s: str, b: bool) -> str:
        s = str(s).replace("|", "\\|")
        return f"**{s}**" if b else s

    head = [t.text.index.name or "", *map(str, t.text.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] + ["---:"] * len(t.text.columns)) + "|"]
    for (label, row), (_, brow) in zip(t.text.iterrows(), t.bold.iterrows()):
        lines.append("| " + " | ".join([str(label)] + [cell(v, b) for v, b in zip(row, brow)]) + " |")
    return "\n".join(lines) + "\n"


LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
         "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$",
         "τ": r"$\tau$", "—": "---", "–": "--"}


def tex_escape(s: str) -> str:
    return "".join(LATEX.get(ch, ch) for ch in s)


def latex(t: Table) -> str:
    def cell(s: str, b: bool) -> str:
        return rf"\textbf{{{tex_escape(str(s))}}}" if b else tex_escape(str(s))

    head = [t.text.index.name or "", *map(str, t.text.columns)]
    lines = [f"% {tex_escape(t.caption)}", "% needs \\usepackage{booktabs}",
             r"\begin{tabular}{l" + "r" * len(t.text.columns) + "}", r"\toprule",
             " & ".join(tex_escape(h) for h in head) + r" \\", r"\midrule"]
    for (label, row), (_, brow) in zip(t.text.iterrows(), t.bold.iterrows()):
        lines.append(" & ".join([tex_escape(str(label))] + [cell(v, b) for v, b in zip(row, brow)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write(t: Table, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"{t.name}.{ext}" for ext in ("md", "tex", "csv")}
    paths["md"].write_text(markdown(t))
    paths["tex"].write_text(latex(t))
    t.data.to_csv(paths["csv"], index=False)
    return paths

"""One table cell: its text and whether it may be compared at all (be best or tied).

- ``final`` (a final metric): the mean over seeds and its Student-t interval. A cell with a failed
  seed (diverged or collapsed) shows "k/n finished" and is never compared: a mean that averages a
  failure away would otherwise look tied with the best.
- ``target`` (a count to the target): the median over all seeds and its order-statistic interval
  (:mod:`suite.report.stats.censored`), "> cap" for an upper end beyond the cap, "k/n reached"
  where some seeds did not reach it; "censored (cap S steps)" when fewer than half did. Compared
  only when no seed failed and the median exists.
- ``plain``: a setting or a measurement (lr, throughput), the value alone.

Marks after a cell: † its lr sits at an edge of its search range, ‡ registry-default lr (every
trial diverged), § no tuning trial reached the target, ◦ its optimum is not resolved by its tuning.
"""
from __future__ import annotations

import math

import pandas as pd

from suite.report.tables.render import fmt, interval

EDGE_MARK, FALLBACK_MARK, UNREACHED_MARK, UNRESOLVED_MARK = " †", " ‡", " §", " ◦"


def kind_of(column: str) -> str:
    if column.endswith("accuracy"):
        return "accuracy"
    return "count" if column in ("steps_to_target", "samples_to_target") else "num"


def with_ci(line, column: str) -> str:
    return interval(line[column], line[f"{column}_lo"], line[f"{column}_hi"], kind_of(column))


def counts_note(line, reached: bool = False) -> str:
    """`` (k/n reached, j/n finished)``: how many seeds reached the target (where asked and not all)
    and finished (where some failed); "" when all did."""
    n, failed = int(line["n_runs"]), int(line.get("n_failed", line["n_diverged"]))
    k = int(line["n_reached"])
    notes = [f"{k}/{n} reached"] if reached and 0 < k < n else []
    notes += [f"{n - failed}/{n} finished"] if failed else []
    return f" ({', '.join(notes)})" if notes else ""


def _final_cell(line, column: str) -> tuple[str, bool]:
    if line["n_diverged"] == line["n_runs"]:
        return "diverged", False
    note = counts_note(line)
    return with_ci(line, column) + note, not note and pd.notna(line[column])  # NaN: not measured


def censored_text(line) -> str:
    """A cell whose median count is beyond its cap: why, and within how many steps."""
    n, d = line["n_runs"], line["n_diverged"]
    if d == n:
        return "diverged"
    cap, why = line.get("step_cap", line.get("cap_steps", math.nan)), line.get("censor_reasons", "cap")
    stopped = ", ".join(r for r in str(why).split(", ") if r not in ("cap", "diverged"))  # e.g. time limit
    if pd.isna(cap):
        text = "censored"
    elif stopped:
        text = f"censored ({stopped}; at most {fmt(cap, 'count')} steps)"
    else:
        text = f"censored (cap {fmt(cap, 'count')} steps)"
    return text + counts_note(line, reached=True)


def _median_text(line, column: str) -> str:
    """``median [lo, hi]``; an upper end beyond the cap reads ``> cap``."""
    kind, hi = kind_of(column), line[f"{column}_hi"]
    if pd.notna(hi) and math.isinf(hi):
        per_step = line[column] / line["steps_to_target"] if line["steps_to_target"] else math.nan
        cap = line["step_cap"] * per_step if column != "seconds_to_target" else math.nan  # epochs, samples ∝ steps
        if pd.notna(cap):
            top = f"> {fmt(cap, kind)}"
        else:  # seconds have no cap of their own; without a cap, the seeds beyond the others failed
            top = "beyond the cap" if pd.notna(line["step_cap"]) else "never"
        return f"{fmt(line[column], kind)} [{fmt(line[f'{column}_lo'], kind)}, {top}]"
    return with_ci(line, column)


def _target_cell(line, column: str) -> tuple[str, bool]:
    if line["n_diverged"] == line["n_runs"] or line.get("to_target_censored", line["n_reached"] == 0) \
            or pd.isna(line[column]):
        return censored_text(line), False
    failed = int(line.get("n_failed", line["n_diverged"]))
    return _median_text(line, column) + counts_note(line, reached=True), not failed


def _plain_cell(line, column: str) -> tuple[str, bool]:
    return fmt(line[column], kind_of(column)), not math.isnan(line[column])


CELL_STYLES = {"final": _final_cell, "target": _target_cell, "plain": _plain_cell}


def cell_text(line, column: str, style: str) -> tuple[str, bool]:
    """The cell's text (with its flags) and whether it may be compared."""
    text, comparable = CELL_STYLES[style](line, column)
    return text + flag_marks(line), comparable


def flag_marks(line) -> str:
    return "".join(mark for key, mark in (("edge", EDGE_MARK), ("lr_fallback", FALLBACK_MARK),
                                          ("lr_unreached", UNREACHED_MARK), ("unresolved", UNRESOLVED_MARK))
                   if _flagged(line.get(key)))


def _flagged(value) -> bool:
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


def marks_legend(cells: pd.DataFrame) -> str:
    """The caption's explanation of the marks its cells carry."""
    legend = (("edge", "† the tuned lr still sits at an edge of its search range (see the tuning table)."),
              ("lr_fallback", "‡ registry-default lr: every tuning trial diverged."),
              ("lr_unreached", "§ no tuning trial reached the target: the lr of the trial closest to it."),
              ("unresolved", "◦ the tuning did not resolve the optimum (fewer than two other trials near the best; "
                             "see the tuning table)."))
    return "".join(f" {text}" for key, text in legend if key in cells and cells[key].map(_flagged).any())

"""Tuning noise: what changes when a cell's whole tuning is repeated with other tuner seeds (its
re-tunings, each with its own reported configuration and final runs over the same seeds).

- Per cell (``tuning_noise``): the spread of the tuned lr across its tunings (min–max, and in
  decades, log10 max/min) and of the table's headline value (the median steps to target, or the
  mean of the primary final metric).
- Per table (``ranking_stability``): each row (batch size) ranks the optimizers once per tuning, by
  the headline value, comparable cells first (:func:`suite.report.tables.cells.cell_text`: no failed
  seed, a median that exists), the others tied after them. Kendall's τ-b between every two tunings'
  rankings of a row, averaged over rows and pairs; and in how many rows the best optimizer (the
  first of the ranking) is not the same for every tuning.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from suite.report.data.metrics import CELL
from suite.report.tables.cells import cell_text
from suite.report.tables.comparison import Score, batch_order, optimizer_order
from suite.report.tables.marks import floor_flags
from suite.report.tables.render import Table, fmt, plain_table

NOISE = ("optimizer", "batch_label", "tunings", "lr_min", "lr_max", "lr_spread_decades", "value_min", "value_max",
         "not_comparable")
STABILITY = ("task", "part", "metric", "rows", "tunings", "kendall_tau_mean", "pairs", "best_changes")


def _ranked(cells: pd.DataFrame, score: Score) -> pd.DataFrame:
    """``order`` (1 = best) of each cell within its row and tuning, non-comparable cells tied last."""
    comparable = pd.Series([cell_text(line, score.column, score.style)[1] for _, line in cells.iterrows()],
                           index=cells.index, dtype=bool)
    value = cells[score.column].where(comparable)
    key = (-value if score.maximize else value).fillna(math.inf)
    key = key.mask(floor_flags(cells, score.column) & comparable, -math.inf)  # at the floor: tied, first
    order = key.groupby([cells["batch_label"], cells["retune"]]).rank(method="min")
    return cells.assign(comparable=comparable, order=order)


def tuning_noise(cells: pd.DataFrame, score: Score) -> pd.DataFrame:
    """Per cell with more than one tuning: the spread of its lr and headline value (:data:`NOISE`)."""
    ranked = _ranked(cells, score)
    lines = []
    for _, g in ranked.groupby(list(CELL), sort=False):
        if g["retune"].nunique() < 2:
            continue
        values = g.loc[g["comparable"], score.column]
        lines.append((g["optimizer"].iloc[0], g["batch_label"].iloc[0], int(g["retune"].nunique()),
                      g["lr"].min(), g["lr"].max(), math.log10(g["lr"].max() / g["lr"].min()),
                      values.min(), values.max(), int((~g["comparable"]).sum())))
    out = pd.DataFrame(lines, columns=list(NOISE))
    rank = {o: i for i, o in enumerate(optimizer_order(out["optimizer"]))}
    rows = {b: i for i, b in enumerate(batch_order(cells))}
    return out.assign(_o=out["optimizer"].map(rank), _b=out["batch_label"].map(rows)).sort_values(
        ["_o", "_b"]).drop(columns=["_o", "_b"]).reset_index(drop=True)


def ranking_stability(cells: pd.DataFrame, score: Score) -> dict:
    """Kendall τ between tunings' rankings of each row (mean over rows and pairs of tunings) and the
    number of rows whose best optimizer changes between tunings."""
    ranked = _ranked(cells, score)
    taus, changes, rows = [], 0, 0
    for _, row in ranked.groupby("batch_label", sort=False):
        orders = row.pivot_table(index="optimizer", columns="retune", values="order")
        if orders.shape[1] < 2:
            continue
        rows += 1
        bests = {tuple(orders.index[orders[r] == orders[r].min()]) for r in orders}
        changes += len(bests) > 1
        for a, b in itertools.combinations(orders.columns, 2):
            both = orders[[a, b]].dropna()
            ordered = len(both) >= 2 and both[a].nunique() > 1 and both[b].nunique() > 1  # all tied: no order
            tau = sps.kendalltau(both[a], both[b]).statistic if ordered else math.nan
            if not math.isnan(tau):
                taus.append(tau)
    return {"metric": score.label, "rows": rows, "tunings": int(cells["retune"].nunique()),
            "kendall_tau_mean": float(np.mean(taus)) if taus else math.nan, "pairs": len(taus),
            "best_changes": changes}


def noise_table(noise: pd.DataFrame, score: Score, where: str) -> Table:
    kind = "count" if score.style == "target" else "num"
    text = pd.DataFrame({
        "batch size": noise["batch_label"], "tunings": noise["tunings"].map(str),
        "tuned lr (min–max)": [f"{fmt(a)}–{fmt(b)}" for a, b in zip(noise["lr_min"], noise["lr_max"])],
        "lr spread (decades)": noise["lr_spread_decades"].map(lambda v: f"{v:.2f}"),
        f"{score.label} (min–max)": [f"{fmt(a, kind)}–{fmt(b, kind)}" if pd.notna(a) else "—"
                                     for a, b in zip(noise["value_min"], noise["value_max"])],
        "not comparable": noise["not_comparable"].map(str),
    }).set_axis(pd.Index(noise["optimizer"], name="optimizer"))
    caption = (f"{where}: tuning noise per cell: its whole tuning repeated with "
               f"independent tuner seeds (sampler and tuning seeds), each tuning's configuration run over the same "
               f"final seeds; the spread of the tuned lr and of {score.label} across the tunings (over the tunings "
               f"whose cell may be compared: no failed seed, a median within the cap; `not comparable` counts the "
               f"others).")
    return plain_table("tuning_noise", caption, text, noise)


def stability_table(lines: list[dict]) -> Table:
    data = pd.DataFrame(lines, columns=list(STABILITY))
    text = pd.DataFrame({
        "part": data["part"], "ranked on": data["metric"], "tunings": data["tunings"].map(str),
        "rows": data["rows"].map(str), "Kendall τ (mean)": data["kendall_tau_mean"].map(lambda v: fmt(v)),
        "pairs": data["pairs"].map(str),
        "rows whose best changes": [f"{c} of {r}" for c, r in zip(data["best_changes"], data["rows"])],
    }).set_axis(pd.Index(data["task"], name="task"))
    caption = ("Ranking stability under re-tuning: per table, each row (batch size) ranks the optimizers once per "
               "tuning (comparable cells first, by the headline value); Kendall's τ-b between every two tunings' "
               "rankings of a row, averaged over rows and pairs (1: the same order every time), and the rows whose "
               "best optimizer is not the same for every tuning.")
    return plain_table("ranking_stability", caption, text, data)

"""Figures along the batch-size axis: steps to target (the median over seeds, censored and failed
cells marked as :mod:`suite.report.figures.marks` says, perfect scaling from a measured point), the
reported lr (one panel per optimizer, the scaling rules through its own smallest uncensored batch)
and throughput (whiskers only where the seeds' clocks were their own)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from suite.report.data.metrics import trained_to_target
from suite.report.data.to_target import seeds_of
from suite.report.figures import marks, style
from suite.report.figures.curves import FigureOptions, individual, label_rows, panel_grid
from suite.report.figures.style import plt, save
from suite.report.stats.bounds import censored_median, median_interval
from suite.report.stats.seeds import t_interval
from suite.report.tables.comparison import batch_order, optimizer_order
from suite.report.tables.tuning import flags


def cell_medians(cells: pd.DataFrame, runs: pd.DataFrame, opts: FigureOptions) -> pd.DataFrame:
    """Per cell (index kept): ``median`` steps to target over its seeds, ``status`` (exact, censored:
    a lower bound, failed: most seeds diverged), the order-statistic interval of the median (``lo``,
    ``hi``; an unbounded end is inf) and the seeds' values (``seeds``: reached ones)."""
    by_id = runs.set_index("run_id")
    out = []
    for i, line in cells.iterrows():
        seeds = seeds_of(by_id.loc[line["run_ids"].split(",")])
        median, bound = censored_median(seeds)
        status = "failed" if not np.isfinite(median) else "censored" if bound else "exact"
        lo, hi = median_interval(seeds, opts.confidence)
        out.append(dict(cell=i, median=median, status=status, lo=lo, hi=hi, n_seeds=len(seeds),
                        seeds=seeds.steps[~seeds.censored]))
    return pd.DataFrame(out, columns=["cell", "median", "status", "lo", "hi", "n_seeds", "seeds"]).set_index("cell")


def _steps(ax, c: pd.DataFrame, x: pd.Series, color, opts: FigureOptions, top: float, edge: pd.Series) -> None:
    """One optimizer's cells: exact medians joined, with their seeds or interval whiskers; cells
    whose lr sits at an edge of its search range ringed red."""
    exact = c["status"] == "exact"
    ax.scatter(x[edge], c.loc[edge, "median"].clip(upper=top), s=150, facecolors="none", edgecolors="red", zorder=3)
    marks.segments(ax, x, c["median"].where(exact), exact, color)
    if individual(int(c["n_seeds"].max()), opts):
        for xi, s in zip(x[exact], c.loc[exact, "seeds"]):
            ax.scatter(np.full(len(s), xi), s, color=color, s=12, alpha=0.7, zorder=3)
    else:
        e = c[exact & c["lo"].notna()]
        hi = e["hi"].clip(upper=top)  # an unbounded end runs to the top of the panel
        ax.vlines(x[e.index], e["lo"], hi, color=color, lw=1.2)
    marks.censored(ax, x[c["status"] == "censored"], c.loc[c["status"] == "censored", "median"], color)
    marks.failed(ax, x[c["status"] == "failed"], color)


def perfect_scaling(ax, medians: pd.DataFrame, cells: pd.DataFrame, sizes: np.ndarray) -> str | None:
    """Slope −1 through the fewest median steps at the smallest batch with an exact median."""
    exact = cells[medians["status"] == "exact"]
    if exact.empty or len(sizes) < 2:
        return None
    b0 = exact["batch_size"].min()
    s0 = medians.loc[exact.index[exact["batch_size"] == b0], "median"].min()
    ideal = s0 * b0 / sizes
    keep = (sizes >= b0) & (ideal >= 1)  # no run takes under one step
    if keep.sum() < 2:
        return None
    ax.plot(sizes[keep], ideal[keep], ls="--", color="0.5", lw=1)
    return f"perfect scaling from batch {b0:g} (slope −1)"


def scaling(cells: pd.DataFrame, runs: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """Median steps to target vs batch size, log-log, one line per optimizer (the target part's cells)."""
    cells = cells[cells["has_target"]]
    if cells.empty:
        return None
    med = cell_medians(cells, runs, opts)
    limits = marks.log_limits(np.r_[med["median"], med["lo"], med["hi"]])
    if limits is None:  # every cell failed (or met the target at step 0): nothing to put on a log axis
        return None
    hue = optimizer_order(cells["optimizer"])
    pal = style.palette(hue)
    fig, ax = plt.subplots(figsize=(6.4, 4.3))
    top = limits[1] * 1.5
    edge = flags(cells, "edge")
    for i, name in enumerate(hue):
        c = cells[cells["optimizer"] == name].sort_values("batch_size")
        _steps(ax, med.loc[c.index], style.dodge(c["batch_size"], i, len(hue)), pal[name], opts, top, edge[c.index])
    sizes = np.array(sorted(cells["batch_size"].unique()), dtype=float)
    rule = perfect_scaling(ax, med, cells, sizes)
    style.batch_axis(ax, sizes)
    ax.set_ylim(limits[0], top)
    ax.set_ylabel("median steps to target (log)")
    ax.grid(alpha=0.3)
    handles, labels = style.handles(hue, pal)
    conv = marks.legend_entries({"censored": (med["status"] == "censored").any(),
                                 "failed": (med["status"] == "failed").any()})
    extra = [(rule, Line2D([], [], ls="--", color="0.5")),
             ("lr at an edge of its search range" if edge.any() else None,
              Line2D([], [], ls="", marker="o", mfc="none", mec="red", ms=10))]
    style.legend(fig, handles + conv[0] + [h for t, h in extra if t], labels + conv[1] + [t for t, _ in extra if t],
                 title=None)
    return save(fig, stem, opts)


def best_lr(cells: pd.DataFrame, runs: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path:
    """Each cell's reported lr vs batch size, one panel per optimizer (log-log): the linear and
    square-root rules through the optimizer's own smallest batch whose lr is a measured, interior
    optimum; a censored cell's lr (its cell never reached the target: not an optimum of steps to
    target) drawn open and not joined; edge-of-range lrs ringed, registry-default lrs crossed."""
    hue = optimizer_order(cells["optimizer"])
    pal = style.palette(hue)
    to_target = cells[cells["has_target"] & cells["config_key"].map(trained_to_target)]  # lrs tuned on steps
    status = cell_medians(to_target, runs, opts)["status"].reindex(cells.index).fillna("exact")
    edge, fallback, unreached = flags(cells, "edge"), flags(cells, "lr_fallback"), flags(cells, "lr_unreached")
    fig, axes = panel_grid(len(hue), sharey=True)
    xs = np.array(sorted(cells["batch_size"].unique()), dtype=float)
    for ax, name in zip(axes.flat, hue):
        p = cells[cells["optimizer"] == name].sort_values("batch_size")
        good = (status[p.index] == "exact") & ~fallback[p.index] & ~unreached[p.index]
        marks.segments(ax, p["batch_size"], p["lr"].where(good), good, pal[name])
        bad = p[~good & ~fallback[p.index]]
        ax.plot(bad["batch_size"], bad["lr"], ls="", marker="o", mfc="white", mec=pal[name], ms=6)
        ax.scatter(p.loc[edge[p.index], "batch_size"], p.loc[edge[p.index], "lr"], s=120, facecolors="none",
                   edgecolors="red", zorder=3)
        ax.scatter(p.loc[fallback[p.index], "batch_size"], p.loc[fallback[p.index], "lr"], s=60, marker="x",
                   color="black", zorder=3)
        anchor = p[good & ~edge[p.index]].head(1)
        if len(anchor) and len(xs) > 1:
            b0, lr0 = float(anchor["batch_size"].iloc[0]), float(anchor["lr"].iloc[0])
            ax.plot(xs[xs >= b0], lr0 * xs[xs >= b0] / b0, ls="--", color="0.55", lw=1, scalex=False, scaley=False)
            ax.plot(xs[xs >= b0], lr0 * np.sqrt(xs[xs >= b0] / b0), ls=":", color="0.3", lw=1, scalex=False,
                    scaley=False)
        style.batch_axis(ax, xs)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylim(cells["lr"].min() / 2, cells["lr"].max() * 2)  # the rules never squash the data
    label_rows(axes, "reported learning rate (log)")
    handles = [Line2D([], [], ls="--", color="0.55"), Line2D([], [], ls=":", color="0.3")]
    labels = ["lr ∝ batch (linear rule) from the optimizer's smallest measured batch",
              "lr ∝ √batch (square-root rule), same anchor"]
    for shown, handle, label in (
            ((status != "exact").any(), Line2D([], [], ls="", marker="o", mfc="white", mec="0.3", ms=6),
             "censored or failed cell: its lr is no optimum of steps to target"),
            (edge.any(), Line2D([], [], ls="", marker="o", mfc="none", mec="red", ms=10),
             "optimum at an edge of the search range"),
            (fallback.any(), Line2D([], [], ls="", marker="x", color="black"), "registry default (every trial diverged)")):
        if shown:
            handles.append(handle)
            labels.append(label)
    style.legend(fig, handles, labels, title=None)
    return save(fig, stem, opts)


def throughput_spread(runs: pd.DataFrame) -> pd.Series:
    """Per (batch, optimizer): whether its seeds' throughputs can show a spread: trained alone
    (``stack_size`` 1: stacked seeds share one clock, so their throughputs are equal by construction)
    and not all equal."""
    g = runs.groupby(["batch_label", "optimizer"])
    alone = g["stack_size"].max() <= 1 if "stack_size" in runs else g["throughput"].size() > 0
    return alone & (g["throughput"].nunique() > 1)


def throughput(runs: pd.DataFrame, stem: Path, opts: FigureOptions) -> tuple[Path | None, str]:
    """Training samples per second per optimizer × batch size: bars at the mean, every seed as a
    point (fewer than ``individual_below`` seeds) or, where the seeds have their own clocks, whiskers
    of the t-interval; returns the path and the words for what the whiskers are."""
    data = runs[runs["throughput"].notna()]
    if data.empty:
        return None, ""
    order, hue = batch_order(data), optimizer_order(data["optimizer"])
    pal = style.palette(hue)
    seeds = int(data.groupby(["batch_label", "optimizer"]).size().max())
    spread = throughput_spread(data)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * len(order) + 2.5), 4.0))
    common = dict(data=data, x="batch_label", y="throughput", hue="optimizer", order=order, hue_order=hue,
                  palette=pal, ax=ax)
    sns.barplot(**common, errorbar=None, alpha=0.55 if individual(seeds, opts) else 0.9)
    if individual(seeds, opts):
        state = np.random.get_state()  # seaborn jitters from numpy's global generator: the same figure each time
        np.random.seed(0)
        sns.stripplot(**common, dodge=True, size=3.5, edgecolor="black", linewidth=0.4, legend=False)
        np.random.set_state(state)
        what = "one point per seed"
    elif spread.any():
        _whiskers(ax, data, spread, order, hue, opts)
        what = (f"whiskers: {opts.confidence:.0%} t-interval over seeds, only where the seeds trained alone "
                f"({int(spread.sum())} of {len(spread)} bars; stacked seeds share one clock, so their bars have none)")
    else:
        what = "no whiskers: the seeds were trained stacked and share one clock, so there is no spread to show"
    ax.set_yscale("log")
    ax.set(xlabel="batch size", ylabel="training samples / s (log)")
    ax.grid(alpha=0.3, axis="y")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="optimizer")
    return save(fig, stem, opts), what


def _whiskers(ax, data, spread, order, hue, opts) -> None:
    """t-interval whiskers over the bars (seaborn's bar positions: one group per batch label)."""
    width = 0.8 / len(hue)
    for (label, name), ok in spread.items():
        if not ok:
            continue
        _, lo, hi = t_interval(data.loc[(data["batch_label"] == label) & (data["optimizer"] == name), "throughput"],
                               opts.confidence)
        x = order.index(label) - 0.4 + width * (hue.index(name) + 0.5)
        ax.vlines(x, max(lo, 1e-12), hi, color="black", lw=1.1)

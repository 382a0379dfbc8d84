"""Figures along the batch-size axis: steps-to-target (censored cells marked, perfect scaling from
a measured point), the reported lr (edge-of-range and fallback lrs marked, the scaling rules drawn
through a measured point) and throughput (seeds as points, or bars with t-interval whiskers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from suite.report.figures import style
from suite.report.figures.curves import FigureOptions, individual
from suite.report.figures.style import plt, save
from suite.report.stats.seeds import t_interval
from suite.report.tables.comparison import batch_order, optimizer_order
from suite.report.tables.tuning import flags

CENSORED = dict(marker="^", facecolors="none", s=70, linewidths=1.3)


def cell_runs(cells: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of each cell's reported configuration, with the cell's index as ``cell``."""
    ids = cells["run_ids"].str.split(",").explode()
    return runs.set_index("run_id").loc[ids.to_numpy()].assign(cell=ids.index.to_numpy()).reset_index()


def _steps(ax, p: pd.DataFrame, seeds: pd.DataFrame, x: pd.Series, color, opts: FigureOptions) -> None:
    """One optimizer's reached cells: the seeds (or mean ± t-interval), partial cells ringed."""
    if individual(int(p["n_seeds"].max()), opts):
        ax.plot(x, p["steps_to_target"], color=color, lw=1.2, marker="_", ms=12, mew=1.5)
        s = seeds[seeds["cell"].isin(p.index) & seeds["reached"]]
        ax.scatter(s["cell"].map(x), s["steps_to_target"], color=color, s=14, alpha=0.8, zorder=3)
    else:
        mid = p["steps_to_target"]
        err = np.vstack([mid - p["steps_to_target_lo"], p["steps_to_target_hi"] - mid])
        ax.errorbar(x, p["steps_to_target"], yerr=err, color=color, marker="o", capsize=2, lw=1.2)
    partial = p["n_reached"] < p["n_runs"]
    ax.scatter(x[partial], p.loc[partial, "steps_to_target"], s=110, facecolors="none", edgecolors="black", zorder=3)
    edge = flags(p, "edge")
    ax.scatter(x[edge], p.loc[edge, "steps_to_target"], s=150, facecolors="none", edgecolors="red", zorder=3)


def perfect_scaling(ax, reached: pd.DataFrame, sizes: np.ndarray) -> str | None:
    """Slope −1 through the fewest steps at the smallest batch where every seed reached the target."""
    full = reached[reached["n_reached"] == reached["n_runs"]]
    if full.empty or len(sizes) < 2:
        return None
    b0 = full["batch_size"].min()
    s0 = full.loc[full["batch_size"] == b0, "steps_to_target"].min()
    ideal = s0 * b0 / sizes
    keep = (sizes >= b0) & (ideal >= 1)  # no run takes under one step
    if keep.sum() < 2:
        return None
    ax.plot(sizes[keep], ideal[keep], ls="--", color="0.5", lw=1)
    return f"perfect scaling from batch {b0:g} (slope −1)"


def scaling(cells: pd.DataFrame, runs: pd.DataFrame, stem: Path, opts: FigureOptions,
            notes: list[str] | None = None) -> Path | None:
    """Steps-to-target vs batch size, log-log, one line per optimizer; censored cells ▲ at their cap."""
    cells = cells[cells["has_target"]]
    reached = cells[(cells["n_reached"] > 0) & (cells["steps_to_target"] > 0)]
    censored = cells[cells["steps_to_target"].isna() & (cells["n_diverged"] < cells["n_runs"])]  # median censored
    lost = cells[cells["n_diverged"] == cells["n_runs"]]
    if notes is not None and len(lost):
        notes.append("every seed diverged (not drawn): " + ", ".join(f"{o} at batch {b}" for o, b in
                                                                      zip(lost["optimizer"], lost["batch_label"])))
    if reached.empty and censored.empty:
        return None
    hue = optimizer_order(cells["optimizer"])
    pal, seeds = style.palette(hue), cell_runs(reached, runs)
    fig, ax = plt.subplots(figsize=(6.4, 4.3))
    for i, name in enumerate(hue):
        p = reached[reached["optimizer"] == name].sort_values("batch_size")
        if len(p):
            _steps(ax, p, seeds, style.dodge(p["batch_size"], i, len(hue)), pal[name], opts)
        c = censored[censored["optimizer"] == name]
        ax.scatter(style.dodge(c["batch_size"], i, len(hue)), c["cap_steps"], edgecolors=pal[name], **CENSORED)
    sizes = np.array(sorted(cells["batch_size"].unique()), dtype=float)
    rule = perfect_scaling(ax, reached, sizes)
    style.batch_axis(ax, sizes)
    ax.set_ylabel("steps to target (log)")
    ax.grid(alpha=0.3)
    handles, labels = style.handles(hue, pal)
    extra = [(rule, Line2D([], [], ls="--", color="0.5")),
             ("some seeds not reached" if (reached["n_reached"] < reached["n_runs"]).any() else None,
              Line2D([], [], ls="", marker="o", mfc="none", mec="black", ms=9)),
             ("censored: not reached within its cap (▲ at the cap)" if len(censored) else None,
              Line2D([], [], ls="", marker="^", mfc="none", mec="black", ms=8)),
             ("lr at an edge of its search range" if flags(reached, "edge").any() else None,
              Line2D([], [], ls="", marker="o", mfc="none", mec="red", ms=10))]
    style.legend(fig, handles + [h for t, h in extra if t], labels + [t for t, _ in extra if t], title=None)
    return save(fig, stem, opts)


def _anchor(cells: pd.DataFrame) -> pd.Series | None:
    """A measured lr to draw the scaling rules through: the smallest batch, first optimizer in
    registry order, not at the edge of its range, not a fallback, and tuned to reach the target."""
    ok = cells[~flags(cells, "edge") & ~flags(cells, "lr_fallback") & ~flags(cells, "lr_unreached")]
    if ok.empty:
        return None
    rank = {o: i for i, o in enumerate(optimizer_order(ok["optimizer"]))}
    return ok.assign(_r=ok["optimizer"].map(rank)).sort_values(["batch_size", "_r"]).iloc[0]


def best_lr(cells: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path:
    """Each cell's reported lr vs batch size, log-log; the linear and square-root rules drawn through
    a measured lr; edge-of-range lrs ringed, registry-default lrs crossed."""
    hue = optimizer_order(cells["optimizer"])
    pal = style.palette(hue)
    fig, ax = plt.subplots(figsize=(6.4, 4.3))
    edge, fallback = flags(cells, "edge"), flags(cells, "lr_fallback")
    for i, name in enumerate(hue):
        mine = cells["optimizer"] == name
        p = cells[mine].sort_values("batch_size")
        x = style.dodge(p["batch_size"], i, len(hue))
        ax.plot(x, p["lr"], color=pal[name], marker="o", lw=1.4)
        ax.scatter(x[edge[p.index]], p.loc[edge[p.index], "lr"], s=120, facecolors="none", edgecolors="red", zorder=3)
        ax.scatter(x[fallback[p.index]], p.loc[fallback[p.index], "lr"], s=80, marker="x", color="black", zorder=3)
    xs = np.array(sorted(cells["batch_size"].unique()), dtype=float)
    ax.set_ylim(cells["lr"].min() / 2, cells["lr"].max() * 2)  # the rules never squash the data
    handles, labels = style.handles(hue, pal)
    anchor = _anchor(cells)
    if anchor is not None and len(xs) > 1:
        b0, lr0 = float(anchor["batch_size"]), float(anchor["lr"])
        ax.plot(xs, lr0 * xs / b0, ls="--", color="0.55", lw=1, scalex=False, scaley=False)
        ax.plot(xs, lr0 * np.sqrt(xs / b0), ls=":", color="0.35", lw=1, scalex=False, scaley=False)
        through = f" through {anchor['optimizer']} at batch {b0:g}"
        handles += [Line2D([], [], ls="--", color="0.55"), Line2D([], [], ls=":", color="0.35")]
        labels += [f"lr ∝ batch (linear rule){through}", f"lr ∝ √batch{through}"]
    for shown, handle, label in ((edge.any(), Line2D([], [], ls="", marker="o", mfc="none", mec="red", ms=10),
                                  "optimum at an edge of the search range"),
                                 (fallback.any(), Line2D([], [], ls="", marker="x", color="black"),
                                  "registry default (every trial diverged)")):
        if shown:
            handles.append(handle)
            labels.append(label)
    style.batch_axis(ax, xs)
    ax.set_ylabel("reported learning rate (log)")
    ax.grid(alpha=0.3)
    style.legend(fig, handles, labels, title=None)
    return save(fig, stem, opts)


def throughput(runs: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """Training samples per second per optimizer × batch size: mean bars, with every seed as a point
    (fewer than ``individual_below`` seeds) or t-interval whiskers."""
    data = runs[runs["throughput"].notna()]
    if data.empty:
        return None
    order, hue = batch_order(data), optimizer_order(data["optimizer"])
    pal = style.palette(hue)
    seeds = int(data.groupby(["batch_label", "optimizer"]).size().max())
    fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * len(order) + 2.5), 4.0))
    common = dict(data=data, x="batch_label", y="throughput", hue="optimizer", order=order, hue_order=hue,
                  palette=pal, ax=ax)
    if individual(seeds, opts):
        sns.barplot(**common, errorbar=None, alpha=0.55)
        sns.stripplot(**common, dodge=True, size=3.5, edgecolor="black", linewidth=0.4, legend=False)
    else:
        sns.barplot(**common, errorbar=lambda v: t_interval(v, opts.confidence)[1:], capsize=0.1)
    ax.set_yscale("log")
    ax.set(xlabel="batch size", ylabel="training samples / s (log)")
    ax.grid(alpha=0.3, axis="y")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="optimizer")
    return save(fig, stem, opts)

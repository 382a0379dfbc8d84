"""Report figures: seaborn on the Agg backend, saved as PNG and PDF, every figure closed.

Each function takes frames from :mod:`suite.report.metrics` (curve rows, per-run summaries, per-cell
aggregates) and a file stem; it returns the PNG path. Colours are fixed per optimizer (registry
order), so one optimizer has one colour in every figure. Axes are log-scaled wherever the values
span decades (losses, lrs, batch sizes, throughput); points at zero cannot sit on a log axis, so
step 0 (and rows with no training time yet) are left out of the curves.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from suite.report import style as S
from suite.report.metrics import bootstrap_ci
from suite.report.style import FigureOptions, plt, save
from suite.report.tables import batch_order, optimizer_order

LABELS = {
    "train_loss": "training loss (full training set)", "excess_loss": "excess loss (training loss − optimum)",
    "val_loss": "validation loss", "minibatch_loss": "mini-batch loss", "epoch": "epochs",
    "time_s": "training-clock seconds", "steps_to_target": "steps to target", "lr": "learning rate",
    "throughput": "training samples / s", "final_val_loss": "final validation loss",
}


def bands(data: pd.DataFrame, keys: list[str], x: str, y: str, opts: FigureOptions) -> pd.DataFrame:
    """Per (keys, step): the seed-mean x, and the mean of y with its bootstrap CI over seeds (the
    tables' estimator; vectorized, where seaborn's own bootstrap loops in Python per point)."""
    out = []
    for key, g in data.groupby([*keys, "step"], sort=False):
        mean, lo, hi = bootstrap_ci(g[y], opts.n_boot, 0.95, opts.seed)
        out.append((*key, g[x].mean(), mean, lo, hi))
    return pd.DataFrame(out, columns=[*keys, "step", x, y, "lo", "hi"]).sort_values([*keys, x])


def _where(frame: pd.DataFrame, where: dict) -> pd.DataFrame:
    return frame[np.logical_and.reduce([frame[k] == v for k, v in where.items()])]


def _panels(agg: pd.DataFrame, x: str, y: str, hue: list[str], facets: list[tuple[dict, str]], ncols: int,
            sharex, size=(3.3, 2.7), labels=("", ""), row_labels: list[str] | None = None):
    """One log-log panel per facet (``{column: value}`` filter, title): a line and a seed band per
    optimizer. Plain subplots rather than seaborn's FacetGrid, which re-runs the layout (every
    tick label's text) on construction and after mapping; here it runs once, in :func:`save`."""
    pal = S.palette(hue)
    # A panel with nothing to draw on a log axis (e.g. GD runs that were all untimed warm-up) is left out.
    picked = [(_where(agg, w), title) for w, title in facets]
    facets = [(sub, title) for sub, title in picked if len(sub)]
    if not facets:
        return None
    ncols = min(ncols, len(facets))
    nrows = math.ceil(len(facets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False,
                             sharex=sharex, sharey=True)
    for ax, (sub, title) in zip(axes.flat, facets):
        for name in hue:
            d = sub[sub["optimizer"] == name]
            ax.plot(d[x], d[y], color=pal[name], lw=1.4)
            ax.fill_between(d[x], d["lo"], d["hi"], color=pal[name], alpha=0.2, lw=0)
        ax.set(xscale="log", yscale="log", title=title)
    for ax in axes.flat[len(facets):]:
        ax.set_visible(False)
    if nrows == 1:
        for ax in axes[0]:
            ax.set_xlabel(labels[0])
    else:  # a hidden last-row panel would leave its column without a label
        fig.supxlabel(labels[0])
    # y labels per row, wrapped: one long figure-wide label collides with the tick labels.
    for ax, label in zip(axes[:, 0], row_labels or [labels[1]] * nrows):
        ax.set_ylabel(textwrap.fill(label, 22))
    S.legend(fig, *S.handles(hue, pal, marker=None))
    return fig


def curves(rows: pd.DataFrame, metric: str, x: str, stem: Path, opts: FigureOptions) -> Path | None:
    """``metric`` vs ``x`` (epochs or seconds), facets = batch size, hue = optimizer, seed band."""
    # Seeds share eval steps but not clock readings: each step sits at its seed-mean x, and the
    # band there is the bootstrap CI over seeds of the loss at that step.
    agg = bands(rows, ["batch_label", "optimizer"], x, metric, opts)
    agg = agg[(agg[x] > 0) & (agg[metric] > 0)]
    facets = [({"batch_label": b}, f"batch {b}") for b in batch_order(rows)]
    fig = _panels(agg, x, metric, optimizer_order(rows["optimizer"]), facets, min(len(facets), 4), sharex=False,
                  labels=(LABELS.get(x, x), LABELS.get(metric, metric)))
    return save(fig, stem, opts) if fig is not None else None


def ema(values: pd.Series, steps: pd.Series, weight: float) -> pd.Series:
    """Exponential moving average with ``weight`` per training step over unevenly spaced points:
    a gap of g steps decays the average by ``weight**g``, as if the value had held for those
    steps. Starts at the first finite value (so it needs no bias correction); NaNs are skipped."""
    out, acc, prev = [], math.nan, None
    for v, s in zip(values, steps):
        if not math.isnan(v):
            decay = 0.0 if prev is None else weight ** (s - prev)
            acc, prev = (v if prev is None else decay * acc + (1 - decay) * v), s
        out.append(acc)
    return pd.Series(out, index=values.index)


SERIES = {"minibatch_loss": "mini-batch loss (raw)", "smoothed": "mini-batch loss (EMA)",
          "train_loss": "loss on the full training set"}


def minibatch(rows: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """Rows of panels: the last mini-batch loss at each evaluation (raw), its EMA, and the loss on
    the full training set it estimates; columns = batch sizes."""
    data = rows[["run_id", "batch_label", "optimizer", "seed", "step", "epoch", "minibatch_loss", "train_loss"]]
    data = data.sort_values(["run_id", "step"])
    data = data.assign(smoothed=[v for _, g in data.groupby("run_id", sort=False)
                                 for v in ema(g["minibatch_loss"], g["step"], opts.ema)])
    long = data.melt(id_vars=["batch_label", "optimizer", "seed", "step", "epoch"], value_vars=list(SERIES),
                     var_name="series", value_name="loss")
    long["series"] = long["series"].map(SERIES)
    agg = bands(long, ["series", "batch_label", "optimizer"], "epoch", "loss", opts)
    agg = agg[(agg["epoch"] > 0) & (agg["loss"] > 0)]
    # Whole columns only: dropping single panels would shift the rows out of line.
    order = [b for b in batch_order(rows) if agg.loc[agg["batch_label"] == b, "series"].nunique() == len(SERIES)]
    facets = [({"series": series, "batch_label": b}, f"batch {b}" if i == 0 else "")
              for i, series in enumerate(SERIES.values()) for b in order]
    fig = _panels(agg, "epoch", "loss", optimizer_order(rows["optimizer"]), facets, max(len(order), 1), sharex="col",
                  size=(3.3, 2.5), labels=("epochs", ""), row_labels=list(SERIES.values()))
    return save(fig, stem, opts) if fig is not None else None


def scaling(cells: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """Steps-to-target vs batch size, log-log, one line per optimizer, with perfect scaling."""
    pts = cells[(cells["n_reached"] > 0) & (cells["steps_to_target"] > 0)]  # step 0 cannot sit on a log axis
    if pts.empty:
        return None
    hue = optimizer_order(pts["optimizer"])
    pal = S.palette(hue)
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    for i, name in enumerate(hue):
        p = pts[pts["optimizer"] == name].sort_values("batch_size")
        x = S.dodge(p["batch_size"], i, len(hue))
        mid, lo, hi = p["steps_to_target"], p["steps_to_target_lo"], p["steps_to_target_hi"]
        err = np.vstack([mid - lo, hi - mid])
        ax.errorbar(x, p["steps_to_target"], yerr=err, color=pal[name], marker="o", capsize=2, lw=1.4)
        partial = p["n_reached"] < p["n_runs"]
        ax.scatter(x[partial], p.loc[partial, "steps_to_target"], s=90, facecolors="none", edgecolors="black", zorder=3)
    b0 = pts["batch_size"].min()
    s0 = pts.loc[pts["batch_size"] == b0, "steps_to_target"].min()
    xs = np.array(sorted(pts["batch_size"].unique()), dtype=float)
    ideal = s0 * b0 / xs
    ax.plot(xs[ideal >= 1], ideal[ideal >= 1], ls="--", color="0.5", lw=1)  # no run takes under one step
    S.batch_axis(ax, xs)
    ax.set_ylabel("steps to target (log)")
    handles, labels = S.handles(hue, pal)
    if len(xs) > 1:
        handles.append(Line2D([], [], ls="--", color="0.5"))
        labels.append("perfect scaling (slope −1)")
    if (pts["n_reached"] < pts["n_runs"]).any():
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="black", ms=9))
        labels.append("some seeds not reached")
    S.legend(fig, handles, labels, title=None)
    return save(fig, stem, opts)


def sensitivity(trials: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path:
    """Final validation loss vs lr from every trial, facets = batch size; diverged ✕, pruned ○."""
    order, hue = batch_order(trials), optimizer_order(trials["optimizer"])
    pal = S.palette(hue)
    fig, axes = S.grid(len(order))
    for ax, batch in zip(axes, order):
        sub = trials[trials["batch_label"] == batch]
        for name in hue:
            t = sub[sub["optimizer"] == name]
            done = t[~t["diverged"] & ~t["pruned"]].groupby("lr")["final_val_loss"].mean()
            ax.plot(done.index, done.to_numpy(), color=pal[name], marker="o", ms=4, lw=1.3)
            pruned = t[t["pruned"] & ~t["diverged"]]
            ax.scatter(pruned["lr"], pruned["final_val_loss"], facecolors="none", edgecolors=pal[name], s=30)
            div = t[t["diverged"]]
            # A diverged trial has no loss: mark its lr along the top edge of the panel.
            ax.scatter(div["lr"], np.full(len(div), 0.95), transform=ax.get_xaxis_transform(), marker="x",
                       color=pal[name], s=36)
        ax.set(xscale="log", title=f"batch {batch}", xlabel="learning rate (log)",
               xlim=(sub["lr"].min() / 1.6, sub["lr"].max() * 1.6))
        losses = sub.loc[~sub["diverged"], "final_val_loss"]
        if (losses > 0).any():  # a panel of diverged trials only has no loss to put on a log axis
            ax.set_yscale("log")
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo, hi * (hi / lo) ** 0.08)  # headroom for the diverged marks
        else:
            ax.set_yticks([])
    axes[0].set_ylabel(LABELS["final_val_loss"])
    handles, labels = S.handles(hue, pal)
    marks = {"diverged (at top)": Line2D([], [], ls="", marker="x", color="black"),
             "pruned (last eval)": Line2D([], [], ls="", marker="o", mfc="none", mec="black")}
    shown = {"diverged (at top)": trials["diverged"].any(), "pruned (last eval)": trials["pruned"].any()}
    S.legend(fig, handles + [marks[k] for k in marks if shown[k]], labels + [k for k in marks if shown[k]])
    return save(fig, stem, opts)


def best_lr(cells: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path:
    """Each cell's chosen lr vs batch size, log-log, with linear and square-root scaling slopes."""
    hue = optimizer_order(cells["optimizer"])
    pal = S.palette(hue)
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    for i, name in enumerate(hue):
        p = cells[cells["optimizer"] == name].sort_values("batch_size")
        ax.plot(S.dodge(p["batch_size"], i, len(hue)), p["lr"], color=pal[name], marker="o", lw=1.4)
    xs = np.array(sorted(cells["batch_size"].unique()), dtype=float)
    anchor = math.exp(np.log(cells.loc[cells["batch_size"] == xs[0], "lr"]).mean())
    # Reference slopes are clipped to the data's range, so they never squash the data.
    ax.set_ylim(cells["lr"].min() / 2, cells["lr"].max() * 2)
    ax.plot(xs, anchor * xs / xs[0], ls="--", color="0.55", lw=1, scalex=False, scaley=False)
    ax.plot(xs, anchor * np.sqrt(xs / xs[0]), ls=":", color="0.35", lw=1, scalex=False, scaley=False)
    S.batch_axis(ax, xs)
    ax.set_ylabel("best learning rate (log)")
    handles, labels = S.handles(hue, pal)
    handles += [Line2D([], [], ls="--", color="0.55"), Line2D([], [], ls=":", color="0.35")]
    S.legend(fig, handles, labels + ["lr ∝ batch (linear rule)", "lr ∝ √batch"], title=None)
    return save(fig, stem, opts)


def throughput(runs: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """Training samples per second per optimizer × batch size (bars: mean over seeds, 95% CI)."""
    data = runs[runs["throughput"].notna()]
    if data.empty:
        return None
    order, hue = batch_order(data), optimizer_order(data["optimizer"])
    fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * len(order) + 2.5), 4.0))
    sns.barplot(data=data, x="batch_label", y="throughput", hue="optimizer", order=order, hue_order=hue,
                palette=S.palette(hue), errorbar=("ci", 95), n_boot=opts.n_boot, seed=opts.seed, ax=ax)
    ax.set_yscale("log")
    ax.set(xlabel="batch size", ylabel="training samples / s (log)")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="optimizer")
    return save(fig, stem, opts)


def profile(data: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path:
    """Performance profile: fraction of problems solved within tau × the best steps-to-target."""
    hue = optimizer_order(data.columns)
    pal = S.palette(hue)
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    for name in hue:
        ax.step(data.index, data[name], where="post", color=pal[name], lw=1.6)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="τ (steps ≤ τ × best, log₂)", ylabel="fraction of problems", ylim=(-0.02, 1.02))
    S.legend(fig, *S.handles(hue, pal))
    return save(fig, stem, opts)

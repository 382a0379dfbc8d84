"""Report figures over runs: loss curves, the per-step mini-batch loss, lr sensitivity and the
performance profile (seaborn/matplotlib on Agg, saved as PNG and PDF, every figure closed).
:mod:`suite.report.figures.scaling` draws the batch-size figures, :mod:`suite.report.science.figures`
the batch-size science.

Each function takes frames from :mod:`suite.report.data.metrics` and a file stem and returns the PNG
path (``None`` when nothing can be drawn). Colours are fixed per optimizer. Seeds: with fewer than
``individual_below`` (10) seeds every seed is drawn (thin lines or points); with more, the mean and
its Student-t band. Axes are log-scaled where values span decades; values at zero cannot sit on a
log axis, so step 0 (and rows with no training time yet) are left out, and a panel left with
nothing is named in ``notes`` (for the caption) instead of being drawn empty.
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from scipy import stats as sps

from suite.report.figures import style
from suite.report.figures.style import plt, save
from suite.report.tables.comparison import batch_order, optimizer_order

LABELS = {
    "train_loss": "training loss (full training set)", "excess_loss": "excess loss (training loss − optimum)",
    "val_loss": "validation loss", "minibatch_loss": "mini-batch loss", "epoch": "epochs",
    "time_s": "training-clock seconds", "steps_to_target": "steps to target", "lr": "learning rate",
    "throughput": "training samples / s", "final_val_loss": "final validation loss",
    "final_excess_loss": "final excess loss (training loss − optimum)", "step": "steps",
}


@dataclass(frozen=True)
class FigureOptions(style.FigureOptions):
    confidence: float = 0.95  # Student-t bands over seeds
    individual_below: int = 10  # fewer seeds than this: every seed is drawn instead of a band


def individual(n_seeds: int, opts: FigureOptions) -> bool:
    return n_seeds < opts.individual_below


def spread(n_seeds: int, opts: FigureOptions, what: str = "band") -> str:
    """The caption's words for how seeds are drawn."""
    if individual(n_seeds, opts):
        return "one thin line per seed" if what == "band" else "one point per seed"
    return f"{what}: {opts.confidence:.0%} t-interval over {n_seeds} seeds"


def t_band(data: pd.DataFrame, keys: list[str], x: str, y: str, confidence: float) -> pd.DataFrame:
    """Per (keys, step): the seed-mean x, and the mean of y with its Student-t interval over seeds."""
    g = data.groupby([*keys, "step"], sort=False)
    out = g.agg(x=(x, "mean"), mean=(y, "mean"), sd=(y, "std"), n=(y, "count")).reset_index()
    half = sps.t.ppf(0.5 + confidence / 2, (out["n"] - 1).clip(lower=1)) * out["sd"] / np.sqrt(out["n"])
    return out.assign(lo=out["mean"] - half.fillna(0), hi=out["mean"] + half.fillna(0)).sort_values([*keys, "x"])


def panel_grid(n: int, sharey=True, size=(3.4, 2.8), max_cols: int = 4):
    """At most ``max_cols`` panels per row (readable when printed); unused panels hidden."""
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False, sharey=sharey)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def label_rows(axes, label: str) -> None:
    for ax in axes[:, 0]:
        ax.set_ylabel(textwrap.fill(label, 24))


def _draw_runs(ax, d: pd.DataFrame, x: str, y: str, color, opts: FigureOptions, n_seeds: int) -> None:
    if individual(n_seeds, opts):
        for _, g in d.groupby("run_id", sort=False):
            ax.plot(g[x], g[y], color=color, lw=0.9, alpha=0.75, marker="o" if len(g) <= 2 else None, ms=3)
        return
    b = t_band(d, ["optimizer"], x, y, opts.confidence)
    ax.plot(b["x"], b["mean"], color=color, lw=1.4, marker="o" if len(b) <= 2 else None, ms=3)
    ax.fill_between(b["x"], b["lo"].clip(lower=b["mean"] / 100), b["hi"], color=color, alpha=0.2, lw=0)


def curves(rows: pd.DataFrame, metric: str, x: str, stem: Path, opts: FigureOptions,
           notes: list[str] | None = None) -> Path | None:
    """``metric`` vs ``x`` (epochs or seconds), one panel per batch size, hue = optimizer."""
    data = rows[(rows[x] > 0) & (rows[metric] > 0)]
    order = batch_order(rows)
    shown = [b for b in order if (data["batch_label"] == b).any()]
    if notes is not None and len(shown) < len(order):
        notes.append(f"no point to draw on log axes for batch {', '.join(b for b in order if b not in shown)}")
    if not shown:
        return None
    hue = optimizer_order(rows["optimizer"])
    pal, n_seeds = style.palette(hue), int(rows.groupby(["batch_label", "optimizer"])["seed"].nunique().max())
    fig, axes = panel_grid(len(shown), sharey=True)
    for ax, batch in zip(axes.flat, shown):
        sub = data[data["batch_label"] == batch]
        for name in hue:
            _draw_runs(ax, sub[sub["optimizer"] == name], x, metric, pal[name], opts, n_seeds)
        ax.set(xscale="log", yscale="log", title=f"batch {batch}", xlabel=LABELS.get(x, x))
        ax.grid(alpha=0.3)
    label_rows(axes, LABELS.get(metric, metric))
    style.legend(fig, *style.handles(hue, pal, marker=None))
    return save(fig, stem, opts)


def _trace_panel(ax, trace: pd.DataFrame, evals: pd.DataFrame, color) -> None:
    """One run: every step's mini-batch loss (bin mean, min–max band where binned) and the full
    training-set loss at its evaluations, both against the number of updates their parameters had:
    step s's mini-batch loss is computed before its own update (at s − 1 updates), an evaluation at
    step s after it (at s updates). Zero updates cannot sit on the log axis."""
    t = trace.sort_values("step_lo")
    t = t[t["step_lo"] > 1]
    mid = np.sqrt((t["step_lo"] - 1) * (t["step_hi"] - 1))
    ax.plot(mid, t["mean"], color=color, lw=0.8, alpha=0.9)
    binned = t["count"] > 1
    if binned.any():
        ax.fill_between(mid, t["min"], t["max"], where=binned.to_numpy(), color=color, alpha=0.2, lw=0)
    e = evals[(evals["step"] > 0) & (evals["train_loss"] > 0)]
    ax.plot(e["step"], e["train_loss"], color="black", marker="o", ms=3.5, lw=1.0)


def minibatch(rows: pd.DataFrame, traces: pd.DataFrame, picks: pd.DataFrame, stem: Path,
              opts: FigureOptions) -> Path | None:
    """Tutorial 000's picture for a few representative cells (``picks``: one run id each, with its
    batch label and optimizer): every step's mini-batch loss beside the full training-set loss."""
    picks = picks[picks["run_id"].isin(set(traces["run_id"]))] if len(traces) else picks.iloc[:0]
    if picks.empty:
        return None
    pal = style.palette(picks["optimizer"])
    fig, axes = panel_grid(len(picks), sharey=False, size=(3.6, 2.9))
    for ax, (_, p) in zip(axes.flat, picks.iterrows()):
        trace = traces[(traces["run_id"] == p["run_id"]) & (traces["mean"] > 0)]
        _trace_panel(ax, trace, rows[rows["run_id"] == p["run_id"]], pal[p["optimizer"]])
        ax.set(xscale="log", yscale="log", xlabel="updates", title=f"batch {p['batch_label']} · {p['optimizer']}")
        ax.grid(alpha=0.3)
    label_rows(axes, "loss")
    handles = [Line2D([], [], color="0.4", lw=0.8), Line2D([], [], color="0.4", lw=6, alpha=0.25),
               Line2D([], [], color="black", marker="o", ms=3.5)]
    style.legend(fig, handles, ["mini-batch loss, every step (bin mean)", "min–max within a bin of steps",
                                "loss on the full training set (evaluations)"], title=None)
    return save(fig, stem, opts)


def sensitivity(trials: pd.DataFrame, stem: Path, opts: FigureOptions, metric: str = "val_loss") -> Path:
    """Final ``metric`` vs lr from every trial, one panel per batch size; diverged ✕, pruned ○."""
    order, hue = batch_order(trials), optimizer_order(trials["optimizer"])
    pal, col = style.palette(hue), f"final_{metric}"
    fig, axes = panel_grid(len(order), sharey=False)
    for ax, batch in zip(axes.flat, order):
        sub = trials[trials["batch_label"] == batch]
        for name in hue:
            t = sub[sub["optimizer"] == name]
            done = t[~t["diverged"] & ~t["pruned"]].groupby("lr")[col].mean()
            ax.plot(done.index, done.to_numpy(), color=pal[name], marker="o", ms=4, lw=1.3)
            pruned = t[t["pruned"] & ~t["diverged"]]
            ax.scatter(pruned["lr"], pruned[col], facecolors="none", edgecolors=pal[name], s=30)
            div = t[t["diverged"]]
            # A diverged trial has no loss: mark its lr along the top edge of the panel.
            ax.scatter(div["lr"], np.full(len(div), 0.95), transform=ax.get_xaxis_transform(), marker="x",
                       color=pal[name], s=36)
        ax.set(xscale="log", title=f"batch {batch}", xlabel="learning rate (log)",
               xlim=(sub["lr"].min() / 1.6, sub["lr"].max() * 1.6))
        ax.grid(alpha=0.3)
        losses = sub.loc[~sub["diverged"], col]
        if (losses > 0).any():  # a panel of diverged trials only has no loss to put on a log axis
            ax.set_yscale("log")
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo, hi * (hi / lo) ** 0.08)  # headroom for the diverged marks
        else:
            ax.set_yticks([])
    label_rows(axes, LABELS.get(col, col))
    handles, labels = style.handles(hue, pal)
    marks = {"diverged (at top)": Line2D([], [], ls="", marker="x", color="black"),
             "pruned (last eval)": Line2D([], [], ls="", marker="o", mfc="none", mec="black")}
    shown = {"diverged (at top)": trials["diverged"].any(), "pruned (last eval)": trials["pruned"].any()}
    style.legend(fig, handles + [marks[k] for k in marks if shown[k]], labels + [k for k in marks if shown[k]])
    return save(fig, stem, opts)


def profile(data: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path:
    """Performance profile: fraction of problems solved within tau × the best steps-to-target."""
    hue = optimizer_order(data.columns)
    pal = style.palette(hue)
    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    for name in hue:
        ax.step(data.index, data[name], where="post", color=pal[name], lw=1.6)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="τ (steps ≤ τ × best, log₂)", ylabel="fraction of problems", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    style.legend(fig, *style.handles(hue, pal))
    return save(fig, stem, opts)

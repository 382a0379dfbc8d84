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

import functools
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from scipy import stats as sps

from suite.report.data.metrics import trained_to_target
from suite.report.figures import marks, style
from suite.report.figures.style import plt, save
from suite.report.tables.comparison import batch_order, optimizer_order

LABELS = {
    "train_loss": "training loss", "excess_loss": "excess loss (training loss − optimum)",
    "val_loss": "validation loss", "minibatch_loss": "mini-batch loss", "epoch": "epochs",
    "time_s": "training-clock seconds", "steps_to_target": "steps to target", "lr": "learning rate",
    "throughput": "training samples / s", "final_val_loss": "final validation loss",
    "final_excess_loss": "final excess loss (training loss − optimum)", "step": "steps",
}


@functools.lru_cache(maxsize=None)
def _train_subset(config: str) -> int | None:
    """A run config's ``eval.train_subset`` (every figure's axis label asks; each config parsed once)."""
    return json.loads(config).get("eval", {}).get("train_subset")


def training_set(rows: pd.DataFrame) -> str:
    """What the stored training loss was computed on: the full training set, or the first N
    examples where the runs evaluated a subset (``eval.train_subset``)."""
    subsets = {_train_subset(c) for c in rows["config"].unique()} if "config" in rows else {None}
    sizes = sorted(s for s in subsets if s)
    if not sizes:
        return "full training set"
    return f"first {'/'.join(f'{s:,}' for s in sizes)} training examples" + (", or all" if None in subsets else "")


def label(metric: str, rows: pd.DataFrame) -> str:
    """An axis label that says what was measured (the training loss's subset, where one was used)."""
    text = LABELS.get(metric, metric)
    return f"{text} ({training_set(rows)})" if metric in ("train_loss", "excess_loss") else text


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
    """Every run as a thin line (few seeds), else the mean and t-band of the runs that finished; a
    diverged run is a thin dashed line, clipped at the axis and ✕ on the top edge where it ended."""
    finished = d[~d["diverged"].astype(bool)]
    if individual(n_seeds, opts):
        for _, g in finished.groupby("run_id", sort=False):
            ax.plot(g[x], g[y], color=color, lw=0.9, alpha=0.75, marker="o" if len(g) <= 2 else None, ms=3)
    elif len(finished):
        b = t_band(finished, ["optimizer"], x, y, opts.confidence)
        ax.plot(b["x"], b["mean"], color=color, lw=1.4, marker="o" if len(b) <= 2 else None, ms=3)
        ax.fill_between(b["x"], b["lo"].clip(lower=b["mean"] / 100), b["hi"], color=color, alpha=0.2, lw=0)
    for _, g in d[d["diverged"].astype(bool)].groupby("run_id", sort=False):
        ax.plot(g[x], g[y], color=color, lw=0.8, ls="--", alpha=0.8)
        marks.failed(ax, g[x].tail(1), color, size=6)


def curves(rows: pd.DataFrame, metric: str, x: str, stem: Path, opts: FigureOptions,
           notes: list[str] | None = None) -> Path | None:
    """``metric`` vs ``x`` (epochs or seconds), one panel per batch size, hue = optimizer; the
    y axis spans the runs that finished (see :mod:`suite.report.figures.marks`)."""
    drawn = ["batch_label", "optimizer", "run_id", "step", "diverged", x, metric]
    data = rows.loc[(rows[x] > 0) & (rows[metric] > 0), drawn]  # what is drawn: each panel and line slices it
    order = batch_order(rows)
    shown = [b for b in order if (data["batch_label"] == b).any()]
    if notes is not None and len(shown) < len(order):
        notes.append(f"no point to draw on log axes for batch {', '.join(b for b in order if b not in shown)}")
    if not shown:
        return None
    hue = optimizer_order(rows["optimizer"])
    pal, n_seeds = style.palette(hue), int(rows.groupby(["batch_label", "optimizer"])["seed"].nunique().max())
    limits = marks.log_limits(data.loc[~data["diverged"].astype(bool), metric])
    lost = rows.loc[rows["diverged"].astype(bool), "run_id"].nunique()
    if notes is not None and lost:
        notes.append(f"{lost} diverged run(s) dashed, clipped at the axis, ✕ on the top edge where they stopped")
    fig, axes = panel_grid(len(shown), sharey=True)
    for ax, batch in zip(axes.flat, shown):
        sub = data[data["batch_label"] == batch]
        for name in hue:
            _draw_runs(ax, sub[sub["optimizer"] == name], x, metric, pal[name], opts, n_seeds)
        ax.set(xscale="log", yscale="log", title=f"batch {batch}", xlabel=LABELS.get(x, x))
        ax.grid(alpha=0.3)
    if limits:
        axes.flat[0].set_ylim(*limits)
    label_rows(axes, label(metric, rows))
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
                                f"training loss on the {training_set(rows[rows['run_id'].isin(picks['run_id'])])} "
                                f"(evaluations)"], title=None)
    return save(fig, stem, opts)


def trial_points(trials: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, str]:
    """One line per tuning trial (its seeds' runs together) on the tuner's objective, and its name:
    steps to target where the trials were trained with a target (``value`` NaN: some seed did not
    reach it; ``ran``: the steps it ran), else the final ``metric``; ``diverged``/``pruned`` if any seed."""
    by_steps = trained_to_target(trials["config_key"].iloc[0])
    col = "steps_to_target" if by_steps else f"final_{metric}"
    keys = ["batch_label", "optimizer", *(["study", "trial"] if {"study", "trial"} <= set(trials) else ["run_id"])]
    t = trials.assign(_div=trials["diverged"].astype(bool), _pruned=trials["pruned"].astype(bool))
    out = t.groupby(keys, sort=False, dropna=False).agg(
        lr=("lr", "first"), value=(col, lambda v: v.mean(skipna=False)), ran=("steps", "max"),
        diverged=("_div", "any"), pruned=("_pruned", "any")).reset_index()
    return out, "steps to target" if by_steps else LABELS.get(col, col)


def sensitivity(trials: pd.DataFrame, stem: Path, opts: FigureOptions, metric: str = "val_loss"
                ) -> tuple[Path, str]:
    """The tuner's objective vs lr for every trial, one panel per batch size: steps to target under
    the target protocol (a trial that missed it ▲ at the steps it ran), else the final ``metric``
    (pruned ○ at its last evaluation); diverged ✕ on the top edge. Returns the path and the
    objective's name."""
    order, hue = batch_order(trials), optimizer_order(trials["optimizer"])
    pal = style.palette(hue)
    points, objective = trial_points(trials, metric)
    by_steps = objective == "steps to target"
    fig, axes = panel_grid(len(order), sharey=False)
    for ax, batch in zip(axes.flat, order):
        sub = points[points["batch_label"] == batch]
        for name in hue:
            t = sub[sub["optimizer"] == name].sort_values("lr")
            done = t[~t["diverged"] & ~t["pruned"] & t["value"].notna()]
            ax.plot(done["lr"], done["value"], color=pal[name], marker="o", ms=4, lw=1.3)
            missed = t[~t["diverged"] & t["value"].isna()] if by_steps else t[t["pruned"] & ~t["diverged"]]
            if by_steps:
                marks.censored(ax, missed["lr"], missed["ran"], pal[name], size=6)
            else:
                ax.scatter(missed["lr"], missed["value"], facecolors="none", edgecolors=pal[name], s=30)
            marks.failed(ax, t.loc[t["diverged"], "lr"], pal[name], size=6)
        ax.set(xscale="log", title=f"batch {batch}", xlabel="learning rate (log)",
               xlim=(sub["lr"].min() / 1.6, sub["lr"].max() * 1.6))
        ax.grid(alpha=0.3)
        alive = sub[~sub["diverged"]]
        limits = marks.log_limits(alive["value"].fillna(alive["ran"]) if by_steps else alive["value"])
        if limits:  # a panel of diverged trials only has nothing to put on a log axis
            ax.set_yscale("log")
            ax.set_ylim(limits[0], limits[1] * 1.6)  # headroom for the arrows and the edge marks
        else:
            ax.set_yticks([])
    label_rows(axes, objective)
    handles, labels = style.handles(hue, pal)
    conv = marks.legend_entries({"diverged": bool(points["diverged"].any())})
    missed = points[~points["diverged"] & (points["value"].isna() if by_steps else points["pruned"])]
    if len(missed):
        conv[0].append(Line2D([], [], ls="", marker="^", mfc="white", mec="black") if by_steps else
                       Line2D([], [], ls="", marker="o", mfc="none", mec="black"))
        conv[1].append("target not reached by every seed (▲ at the steps run)" if by_steps else
                       "pruned (last evaluation)")
    style.legend(fig, handles + conv[0], labels + conv[1])
    return save(fig, stem, opts), objective


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

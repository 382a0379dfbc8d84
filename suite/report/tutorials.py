"""The tutorials' own pictures, redrawn from stored rows (the ``tutorials`` study preset runs them):

* tutorial 003: batch vs stochastic vs mini-batch gradient descent on y = 3x + 2 + 0.1ε (batch
  sizes 1000, 1 and 128, lr 0.01, 20 epochs): the training loss per epoch of each;
* tutorial 000: the mini-batch loss at every step (too noisy to monitor) beside the loss on the
  whole training set, which is what to watch;
* tutorial 004: gradient accumulation, k micro-batches against one big batch: the same curve when
  the micro-batch gradients are averaged (``mean``), a k times larger step when summed (``sum``).

Each function takes the annotated rows of the study (and the traces) and returns the PNG path, or
None when the rows it needs are not there.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from suite.report.readme import Context, Section
from suite.report.figures.style import FigureOptions, plt, save
from suite.store.runs import RunStore

REGIMES = {"GD": "batch (GD, all 1000)", "SGD": "stochastic (batch 1)", "mini-batch": "mini-batch"}


def _plain(rows: pd.DataFrame) -> pd.DataFrame:
    """Final (not trial, not purpose) runs of SGD on the regression task, accumulation aside."""
    keep = (rows["task"] == "regression") & (rows["optimizer"] == "sgd") & ~rows["is_trial"]
    if "purpose" in rows:
        keep &= rows["purpose"].isna()
    return rows[keep]


def batch_vs_stochastic(rows: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """Tutorial 003: training loss per epoch for batch, stochastic and mini-batch gradient descent."""
    plain = _plain(rows)
    plain = plain[plain["accumulation_steps"] == 1]
    if plain["batch_size"].nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for (batch, regime), run in plain.groupby(["batch_size", "regime"]):
        run = run[run["seed"] == run["seed"].min()].sort_values("epoch")
        label = REGIMES[regime] if regime != "mini-batch" else f"mini-batch ({batch})"
        ax.plot(run["epoch"], run["train_loss"], marker="o", ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (whole training set)")
    ax.legend(frameon=False)
    return save(fig, stem, opts)


def every_step(rows: pd.DataFrame, traces: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """Tutorial 000: every step's mini-batch loss beside the whole-training-set loss."""
    plain = _plain(rows)
    plain = plain[(plain["accumulation_steps"] == 1) & (plain["regime"] == "mini-batch")]
    if plain.empty or traces.empty:
        return None
    run = plain[plain["run_id"] == plain.sort_values(["batch_size", "seed"])["run_id"].iloc[0]].sort_values("step")
    trace = traces[traces["run_id"] == run["run_id"].iloc[0]].sort_values("step_lo")
    if trace.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    ax.plot(trace["step_hi"], trace["mean"], lw=0.6, color="0.6", label="mini-batch loss (every step)")
    if (trace["count"] > 1).any():
        ax.fill_between(trace["step_hi"], trace["min"], trace["max"], color="0.85", lw=0, label="min–max in a bin")
    ax.plot(run["step"].clip(lower=1), run["train_loss"], marker="o", ms=3, color="C3",
            label="whole training set (each epoch)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"batch {int(run['batch_size'].iloc[0])}, lr {run['lr'].iloc[0]:g}", fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    return save(fig, stem, opts)


def accumulation(rows: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """Tutorial 004: micro-batches accumulated (mean and sum) against the one big batch they emulate."""
    plain = _plain(rows)
    accumulated = plain[plain["accumulation_steps"] > 1]
    if accumulated.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    batch = int(accumulated["batch_size"].iloc[0])
    big = plain[(plain["accumulation_steps"] == 1) & (plain["batch_size"] == batch)]
    for label, run, style in [(f"one batch of {batch}", big, dict(lw=3, alpha=0.4, color="C0"))] + [
            (f"{int(r['micro_batch'].iloc[0])}×{int(r['accumulation_steps'].iloc[0])}, {reduction}", r,
             dict(marker="o", ms=3, ls="--" if reduction == "mean" else "-"))
            for reduction, r in accumulated.groupby("accumulation_reduction")]:
        if run.empty:
            continue
        run = run[run["seed"] == run["seed"].min()].sort_values("epoch")
        ax.plot(run["epoch"], run["train_loss"], label=label, **style)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (whole training set)")
    ax.legend(frameon=False)
    return save(fig, stem, opts)


def tutorial_section(ctx: Context) -> Section | None:
    """The tutorials' pictures, for a study named ``tutorials`` (``conf/study/tutorials.yaml``)."""
    if ctx.study.name != "tutorials":
        return None
    sec, figures = Section("The tutorials' pictures"), ctx.out / "figures" / "tutorials"
    traces = RunStore(ctx.root).load_traces(set(ctx.rows["run_id"]))
    sec.fig(batch_vs_stochastic(ctx.rows, figures / "batch_vs_stochastic", ctx.opts),
            "Tutorial 003: batch (GD), stochastic (batch 1) and mini-batch gradient descent on y = 3x + 2 + 0.1ε, "
            "lr 0.01: the training loss on the whole training set after every epoch (log scale).")
    sec.fig(every_step(ctx.rows, traces, figures / "minibatch_every_step", ctx.opts),
            "Tutorial 000: the mini-batch loss of every step (grey; noisy, so not what to monitor) beside the loss "
            "on the whole training set at each epoch (red).")
    sec.fig(accumulation(ctx.rows, figures / "accumulation", ctx.opts),
            "Tutorial 004: gradient accumulation. Micro-batches whose gradients are averaged (mean) retrace the "
            "one big batch they emulate; summed (the tutorial's code), every update is k times larger.")
    return sec if sec.figures else None

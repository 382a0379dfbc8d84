"""A cell's tuning trials from stored run summaries (:func:`suite.report.data.metrics.summarize_runs`):
one line per trial, replaying the tuner's values from stored rows (``per_trial``), and per cell
divergence, the largest stable lr, the divergence boundary, the best trial and the lr
sensitivity (``trial_stats``). A trial with a diverged seed counts as diverged, one with a
collapsed seed ranks behind every trial whose seeds all finished, as the tuner ranks them."""
from __future__ import annotations

import json
import math
from typing import Callable

import numpy as np
import pandas as pd

from suite.report.data.metrics import TUNED_CELL
from suite.report.stats.batch_science import divergence_boundary
from suite.types import Target, unreached_value


def sensitivity(lrs: pd.Series, losses: pd.Series, diverged: pd.Series, tolerance: float = 0.1):
    """Width in decades of the contiguous lr range around the best lr whose final validation loss is
    within ``tolerance`` of the best; a diverged lr ends the range. Returns (decades, low lr, high lr)."""
    per_lr = pd.DataFrame({"loss": losses.where(~diverged), "div": diverged}).groupby(lrs.values).agg(
        loss=("loss", "mean"), div=("div", "any")).sort_index()
    ok = per_lr["loss"].notna() & ~per_lr["div"]
    if not ok.any():
        return math.nan, math.nan, math.nan
    best_i = int(np.nanargmin(per_lr["loss"].where(ok).to_numpy()))
    good = (ok & (per_lr["loss"] <= per_lr["loss"].iloc[best_i] * (1 + tolerance))).to_numpy()
    lo = hi = best_i
    while lo > 0 and good[lo - 1]:
        lo -= 1
    while hi < len(good) - 1 and good[hi + 1]:
        hi += 1
    low, high = float(per_lr.index[lo]), float(per_lr.index[hi])
    return math.log10(high / low), low, high


def per_trial(g: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """Per tuned cell (its :data:`TUNED_CELL` key), one line per tuning trial (a trial trained at
    several tuning seeds has a run per seed): its lr, whether any seed diverged, was pruned or
    collapsed, ``steps`` (mean steps to target, NaN unless every seed reached it) and its ``score``,
    the tuner's value: the mean over its seeds of :func:`_tuner_values` where trials were ranked by
    steps (the target part), else the mean final validation loss. ``g``: the trials' runs of every
    cell, summarized in one pass."""
    by_steps = g["part"].eq("target")
    keys = ["study", "trial"] if {"study", "trial"} <= set(g) and g["trial"].notna().all() else ["run_id"]
    value = g["final_val_loss"].astype(float)
    if by_steps.any():
        value = value.where(~by_steps, _tuner_values(g[by_steps]))
    g = g.assign(_div=g["diverged"].astype(bool), _pruned=g["pruned"].astype(bool) & ~g["diverged"].astype(bool),
                 _collapsed=g["collapsed"].astype(bool) & ~g["pruned"].astype(bool), _value=value)
    out = g.groupby([*TUNED_CELL, *keys], sort=False, dropna=False).agg(
        lr=("lr", "first"), diverged=("_div", "any"), pruned=("_pruned", "any"), collapsed=("_collapsed", "any"),
        score=("_value", "mean"), final_val_loss=("final_val_loss", "mean"), steps=("steps_to_target", "mean"),
        reached=("steps_to_target", "count"), seeds=("steps_to_target", "size"))
    out["steps"] = out["steps"].where(out.pop("reached") == out.pop("seeds"))  # NaN unless every seed reached it
    out = out.reset_index(level=keys).reset_index(drop=False)
    lines = {}
    for cell, lines_of_cell in out.groupby(list(TUNED_CELL), sort=False, dropna=False):
        cell_lines = lines_of_cell.drop(columns=list(TUNED_CELL)).reset_index(drop=True)
        # the tuner breaks ties by trial number
        cell_lines["number"] = cell_lines["trial"] if "trial" in cell_lines else range(len(cell_lines))
        lines[cell] = cell_lines
    return lines


def trial_stats(runs: pd.DataFrame, tolerance: float = 0.1, metric: str | Callable[[str], str] = "val_loss"
                ) -> pd.DataFrame:
    """Per cell, from its tuning trials: divergence, largest stable lr and the divergence boundary
    (from runs), the best trial and the lr sensitivity (from trials, on the tuner's objective:
    steps to target where the trials were trained with a target, i.e. under the target protocol,
    else the final ``metric``, a name or a function of the task name giving it).

    Pruned trials stopped early, so they are counted but not used for the best trial or the
    sensitivity; a trial any of whose seeds diverged counts as diverged, as the tuner scores it, and
    one with a collapsed seed is chosen only where no trial finished every seed.
    """
    out = []
    trial_runs = runs.loc[runs["is_trial"], _trial_columns(runs)]  # a cell's runs are sliced many times
    lines = per_trial(trial_runs)
    for key, g in trial_runs.groupby(list(TUNED_CELL), sort=False):
        task = g["task"].iloc[0]
        steps = g["part"].iloc[0] == "target"  # target-part trials are ranked by their steps to it
        trials = lines[key]
        done_runs = g[~g["pruned"].astype(bool) | g["diverged"].astype(bool)]
        div_runs = done_runs["diverged"].astype(bool)
        finished = trials[~trials["diverged"] & ~trials["pruned"]]
        best = _best_trial(finished)
        name = "steps_to_target" if steps else metric(task) if callable(metric) else metric
        if steps:  # a trial that did not reach the target (NaN) ends the good range, as a diverged one does
            done = trials[~trials["pruned"]]
            width, low, high = sensitivity(done["lr"], done["score"].where(done["steps"].notna()), done["diverged"],
                                           tolerance)
        else:
            width, low, high = sensitivity(done_runs["lr"], done_runs[f"final_{name}"], div_runs, tolerance)
        lrs_div = done_runs.groupby("lr")["diverged"].any()
        smallest_diverged, boundary = divergence_boundary(done_runs["lr"], div_runs)
        out.append(dict(zip(TUNED_CELL, key), task=task, batch_label=g["batch_label"].iloc[0],
                        study=g["study"].iloc[0] if "study" in g else None,
                        n_trials=len(trials), n_usable=len(finished), n_pruned=int(trials["pruned"].sum()),
                        n_diverged=int(trials["diverged"].sum()), n_lrs=int(g["lr"].nunique()),
                        frac_lrs_diverged=float(lrs_div.mean()) if len(lrs_div) else math.nan,
                        largest_stable_lr=float(finished["lr"].max()) if len(finished) else math.nan,
                        smallest_diverged_lr=smallest_diverged, divergence_boundary=boundary,
                        best_trial_lr=float(best["lr"]) if best is not None else math.nan,
                        best_trial_val_loss=float(best["final_val_loss"]) if best is not None else math.nan,
                        best_trial_score=float(best["score"]) if best is not None else math.nan,
                        trial_objective="steps to target" if steps else "final validation loss",
                        sensitivity_metric=name, sensitivity_decades=width, sensitivity_low_lr=low,
                        sensitivity_high_lr=high))
    return pd.DataFrame(out)


def _trial_columns(runs: pd.DataFrame) -> list[str]:
    """The summary columns :func:`trial_stats` reads: the cell, the trial, its lr and outcomes."""
    keep = {*TUNED_CELL, "task", "batch_label", "study", "trial", "run_id", "config_key", "lr", "diverged", "pruned",
            "collapsed", "steps", "steps_to_target"}
    return [c for c in runs if c in keep or c.startswith(("initial_", "final_"))]


def _tuner_values(runs: pd.DataFrame) -> pd.Series:
    """Each run's value as the tuner scored it under the target protocol: its steps to the target,
    else (it ran to its cap, ``steps``) :func:`unreached_value` of its shortfall (a cell's target
    read from its first run)."""
    values = []
    for _, cell in runs.groupby(list(TUNED_CELL), sort=False, dropna=False):
        target = Target(**json.loads(cell["config_key"].iloc[0])["target"])
        short = [target.shortfall(i, f) for i, f in zip(cell[f"initial_{target.metric}"], cell[f"final_{target.metric}"])]
        missed = pd.Series([unreached_value(cap, s) for cap, s in zip(cell["steps"], short)], index=cell.index)
        values.append(cell["steps_to_target"].where(cell["steps_to_target"].notna(), missed))
    return pd.concat(values)


def _best_trial(finished: pd.DataFrame) -> pd.Series | None:
    """The tuner's choice: a trial with a collapsed seed ranks behind every trial whose seeds all
    finished; then least score, ties to the earlier trial (a trial that did not reach the target
    ranks behind every one that did, and among those the least final validation loss)."""
    if finished.empty or not (finished["score"].notna() | finished["final_val_loss"].notna()).any():
        return None
    order = finished.assign(_s=finished["score"].fillna(math.inf), _v=finished["final_val_loss"].fillna(math.inf))
    scored = order["score"].notna().any()
    return order.sort_values(["collapsed", "_s" if scored else "_v", "number"], kind="stable").iloc[0]

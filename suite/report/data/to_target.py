"""Steps-to-target per run, and why a run that did not reach its target stopped (censoring).

Where a run was trained with the report's target (``target`` in its config), the loop located the
first step that meets it by replay (``steps_to_target``, exact to 5% or one step; the width of the
interval it was located in is ``to_target_bracket``). Other runs (older rows, or a target changed
for the report) fall back to the first *evaluation* row that meets the target; their bracket is the
distance to the evaluation before it, which is the resolution of that number. Epochs, samples and
training-clock seconds to target follow from the step (seconds interpolated between evaluations).

A run that did not reach the target is *censored*: its steps-to-target is only known to exceed
what it ran. ``censor_reason`` says why it stopped: ``diverged``, ``pruned``, ``time limit`` or
``cap`` (it trained its whole step cap or epoch budget, ``cap_steps`` steps).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from suite.report.stats.bounds import Seeds
from suite.types import Target

TO_TARGET = {"step": "steps_to_target", "epoch": "epochs_to_target", "samples": "samples_to_target",
             "time_s": "seconds_to_target"}
COLUMNS = (*TO_TARGET.values(), "to_target_bracket", "target_source")


def same_target(given: dict | None, target: Target) -> bool:
    """True when a run's configured target (its config's ``target``) is ``target``."""
    if not given or given.get("metric") != target.metric:
        return False
    return all((given.get(k) is None) == (getattr(target, k) is None) and
               (given.get(k) is None or math.isclose(given[k], getattr(target, k), rel_tol=1e-9))
               for k in ("value", "relative"))


def _first_hits(rows: pd.DataFrame, target: Target) -> pd.DataFrame:
    """The first row of each run that meets ``target`` and its distance to the evaluation before."""
    initial = rows.groupby("run_id", sort=False)[target.metric].transform("first")
    meets = target.met(rows[target.metric], target.thresholds(initial)).fillna(False).astype(bool)
    previous = rows.groupby("run_id", sort=False)["step"].shift(1)
    hits = rows[meets].groupby("run_id", sort=False).head(1)
    return pd.DataFrame({"step": hits["step"].to_numpy(dtype=float),
                         "bracket": (hits["step"] - previous[hits.index]).fillna(0).to_numpy(dtype=float)},
                        index=hits["run_id"])


def _seconds_at(rows: pd.DataFrame, steps: pd.Series) -> pd.Series:
    """Training-clock seconds at each run's ``step``, interpolated between its evaluations."""
    out = pd.Series(math.nan, index=steps.index)
    for rid, g in rows[rows["run_id"].isin(steps.dropna().index)].groupby("run_id", sort=False):
        out[rid] = float(np.interp(steps[rid], g["step"], g["time_s"]))
    return out


def task_to_target(rows: pd.DataFrame, target: Target) -> pd.DataFrame:
    """The to-target columns (:data:`COLUMNS`) of every run of one task, indexed by ``run_id``.
    ``rows`` are sorted by run and step."""
    last = rows.groupby("run_id", sort=False).tail(1).set_index("run_id")
    exact = last["config"].map(lambda c: same_target(json.loads(c).get("target"), target)).astype(bool)
    hits = _first_hits(rows, target).reindex(last.index)
    out = pd.DataFrame(index=last.index)
    out["steps_to_target"] = last["steps_to_target"].where(exact, hits["step"]).astype(float)
    out["epochs_to_target"] = out["steps_to_target"] * last["batch_size"] / last["n_train"]
    out["samples_to_target"] = out["steps_to_target"] * last["batch_size"]
    out["seconds_to_target"] = _seconds_at(rows, out["steps_to_target"])
    out["to_target_bracket"] = last["to_target_bracket"].where(exact, hits["bracket"]).astype(float)
    out["to_target_bracket"] = out["to_target_bracket"].where(out["steps_to_target"].notna())
    out["target_source"] = np.where(exact, "exact", "evaluations")
    return out


def censoring(last: pd.DataFrame, reached: pd.Series, has_target: pd.Series) -> pd.DataFrame:
    """``censored``, ``censor_reason`` and ``cap_steps`` for runs (their last rows, by run id)."""
    max_seconds = last["config"].map(lambda c: json.loads(c).get("max_seconds"))
    timed_out = [s is not None and t >= 0.99 * s for s, t in zip(max_seconds, last["time_s"])]
    reason = np.select([last["diverged"].astype(bool), last["pruned"].astype(bool), np.array(timed_out, bool)],
                       ["diverged", "pruned", "time limit"], "cap")
    censored = has_target & ~reached
    return pd.DataFrame({"censored": censored, "censor_reason": np.where(censored, reason, ""),
                         "cap_steps": last["step"].astype(float).where(censored)}, index=last.index)


def seeds_of(runs: pd.DataFrame) -> Seeds:
    """Runs (summaries) as seeds of steps to target: the step where reached; for an unreached run the
    steps it ran (a lower bound), or +inf where it diverged (it would never have reached it)."""
    unreached = runs["cap_steps"].where(~runs["diverged"].astype(bool), math.inf)
    return Seeds.of(runs["steps_to_target"].fillna(unreached), ~runs["reached"].astype(bool))

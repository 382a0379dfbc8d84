"""Convergence metrics from stored rows only (pandas + numpy: no torch, never trains).

A *run* is one ``run_id``; its rows are its evaluation points. The pipeline:
``annotate`` (labels, configuration key, trial and extra-run flags) -> ``summarize_runs`` (one
line per run) -> ``aggregate`` (the runs of one configuration, over seeds: mean and Student-t
interval) -> ``pick_best`` (each cell's best configuration). ``trial_stats`` reads a cell's tuning
trials: divergence, largest stable lr and the divergence boundary, lr sensitivity. Conventions:

- *final* = the last evaluation row; *best* = the best value over all evaluation rows. A
  diverged run has no final value (NaN: its loss exploded) and is counted in ``n_diverged``.
- *to-target*: :mod:`suite.report.data.to_target` (exact steps where the run was trained with the
  target, else the first evaluation that meets it; unreached runs are censored, with the reason).
- *throughput* = training samples after the warm-up steps / training-clock seconds (the
  clock excludes evaluation and the untimed warm-up steps).
- Runs tagged with a ``purpose`` (e.g. ``theory``, ``lr_scaling``) are a study's extra
  experiments: never a final run of a cell, never a trial.
"""
from __future__ import annotations

import json
import math
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from suite.report.data import to_target
from suite.report.stats.batch_science import divergence_boundary
from suite.report.stats.seeds import t_interval
from suite.types import METRICS, Target, unreached_value

# One matrix cell; task_label separates runs of one task with different task options.
CELL = ("task_label", "optimizer", "batch_size", "micro_batch", "accumulation_steps", "sampling",
        "accumulation_reduction")
SAMPLING_MARK = {"shuffle": "", "sequential": " seq", "replacement": " repl"}


def batch_label(batch_size: int, micro_batch: int, accumulation_steps: int, regime: str,
                sampling: str = "shuffle", reduction: str = "mean") -> str:
    """``1 (SGD)``, ``32``, ``64×16`` (micro-batch × accumulation), ``1000 (GD)``; + variants."""
    label = f"{micro_batch}×{accumulation_steps}" if accumulation_steps > 1 else str(batch_size)
    if regime in ("GD", "SGD"):
        label += f" ({regime})"
    return label + SAMPLING_MARK.get(sampling, f" {sampling}") + ("" if reduction == "mean" else f" {reduction}")


def _task_labels(tasks: pd.Series, options: pd.Series) -> pd.Series:
    """Task name, plus the task options that differ between its runs (e.g. ``mnist (model=cnn)``)."""
    labels = tasks.copy()
    for name in tasks.unique():
        mask = tasks == name
        opts = options[mask].map(json.loads)
        keys = sorted({k for o in opts for k in o})
        varying = [k for k in keys if len({json.dumps(o.get(k), sort_keys=True) for o in opts}) > 1]
        if varying:
            labels[mask] = opts.map(lambda o: f"{name} ({', '.join(f'{k}={o.get(k)}' for k in varying)})")
    return labels


def annotate(rows: pd.DataFrame) -> pd.DataFrame:
    """Add ``task_label``, ``batch_label``, ``config_key`` (the config minus seed), ``is_trial`` and
    ``is_extra`` (a run tagged with a ``purpose``)."""
    configs = rows.groupby("run_id", sort=False)["config"].first().map(json.loads)
    key = configs.map(lambda c: json.dumps({k: v for k, v in c.items() if k != "seed"}, sort_keys=True))
    options = configs.map(lambda c: json.dumps(c.get("task_options", {}), sort_keys=True))
    out = rows.copy()
    out["config_key"] = out["run_id"].map(key)
    out["task_label"] = _task_labels(out["task"], out["run_id"].map(options))
    out["is_trial"] = out["trial"].notna() if "trial" in out else False
    out["is_extra"] = out["purpose"].notna() & (out["purpose"].astype(str) != "") if "purpose" in out else False
    labels = {k: batch_label(*k) for k in out.groupby(
        ["batch_size", "micro_batch", "accumulation_steps", "regime", "sampling", "accumulation_reduction"]).groups}
    out["batch_label"] = [labels[k] for k in zip(out["batch_size"], out["micro_batch"], out["accumulation_steps"],
                                                 out["regime"], out["sampling"], out["accumulation_reduction"])]
    return out


TO_TARGET = to_target.TO_TARGET
STATIC = (*CELL, "task", "model", "batch_label", "regime", "lr", "seed", "config_key", "is_trial", "is_extra",
          "diverged", "diverged_step", "pruned", "n_train", "warmup_steps")
TAGS = ("study", "trial", "purpose", "retune")


def summarize_runs(rows: pd.DataFrame, targets: Mapping[str, Target]) -> pd.DataFrame:
    """One line per run: final/best metrics, to-target and censoring, throughput. ``rows`` from
    :func:`annotate`."""
    rows = rows.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)
    groups = rows.groupby("run_id", sort=False)
    first, last = groups.head(1).set_index("run_id"), groups.tail(1).set_index("run_id")
    out = last[[*STATIC, *(c for c in TAGS if c in rows)]].copy()
    out["steps"], out["epochs"], out["time_s"] = last["step"], last["epoch"], last["time_s"]
    alive = ~last["diverged"].astype(bool)
    for m in METRICS:
        out[f"initial_{m}"] = first[m]
        out[f"final_{m}"] = last[m].where(alive)
        out[f"best_{m}"] = groups[m].max() if m.endswith("accuracy") else groups[m].min()
    timed = (last["step"] - last["warmup_steps"]).clip(lower=0) * last["batch_size"]
    out["throughput"] = (timed / last["time_s"]).where((last["time_s"] > 0) & (timed > 0))
    hits = [to_target.task_to_target(sub, targets[task]) for task, sub in rows.groupby("task") if task in targets]
    hits = pd.concat(hits) if hits else pd.DataFrame(columns=list(to_target.COLUMNS))
    for col in to_target.COLUMNS:
        out[col] = hits[col].reindex(out.index).astype(str if col == "target_source" else float)
    out["has_target"] = out["task"].isin(list(targets))
    out["reached"] = out["steps_to_target"].notna()
    out = out.join(to_target.censoring(last, out["reached"], out["has_target"]))
    return out.reset_index()


SUMMARY_COLUMNS = (*(f"{k}_{m}" for k in ("final", "best") for m in METRICS), "throughput", *TO_TARGET.values())


def aggregate(runs: pd.DataFrame, by: Iterable[str] = (*CELL, "config_key"), columns=SUMMARY_COLUMNS,
              confidence: float = 0.95) -> pd.DataFrame:
    """The runs of each group over seeds: ``col`` (mean), ``col_lo``/``col_hi`` (Student-t interval;
    NaN with one seed), counts, and for to-target: the widest bracket and the cap of censored seeds."""
    by = list(by)
    keep = ["task", "model", "batch_label", "regime", "lr", "has_target"]
    out = []
    for key, g in runs.groupby(by, sort=False, dropna=False):
        line = dict(zip(by, key), **{k: g[k].iloc[0] for k in keep if k not in by},
                    n_runs=len(g), n_seeds=g["seed"].nunique(), n_diverged=int(g["diverged"].sum()),
                    n_reached=int(g["reached"].sum()), n_censored=int(g["censored"].sum()),
                    cap_steps=g["cap_steps"].max(), to_target_bracket=g["to_target_bracket"].max(),
                    censor_reasons=", ".join(sorted(set(g["censor_reason"]) - {""})),
                    run_ids=",".join(g["run_id"]))
        for col in columns:
            mean, lo, hi = t_interval(g[col], confidence)
            low, high = metric_range(col)
            line[col], line[f"{col}_lo"], line[f"{col}_hi"] = mean, max(lo, low), min(hi, high)
        out.append(line)
    return pd.DataFrame(out)


def metric_range(column: str) -> tuple[float, float]:
    """The values a summary column can take; its t-interval is truncated to them (a symmetric
    interval around an accuracy near 1, or a count near 0, would otherwise leave them)."""
    if column.endswith("accuracy"):
        return 0.0, 1.0
    if "excess" in column:
        return -math.inf, math.inf  # training loss minus the optimum: rounding makes it slightly negative
    return 0.0, math.inf  # losses, steps, epochs, samples, seconds, throughput


def final_runs(runs: pd.DataFrame, seeds: Iterable[int] | None = None) -> pd.DataFrame:
    """The runs of every configuration that has at least one final run (neither a trial nor an
    extra run with a ``purpose``).

    A trial with exactly a final configuration has its run id, so it *is* that run (the study
    skips it as stored): such a trial counts as that seed of the final configuration, provided its
    seed is one of the study's final ``seeds`` (when known): tuning seeds are never final seeds.
    """
    ordinary = runs[~runs["is_extra"].astype(bool)]
    if seeds is not None:
        ordinary = ordinary[~ordinary["is_trial"] | ordinary["seed"].isin(list(seeds))]
    return ordinary[ordinary["config_key"].isin(ordinary.loc[~ordinary["is_trial"], "config_key"])]


def pick_best(configs: pd.DataFrame, select: str = "final_val_loss") -> pd.DataFrame:
    """Each cell's best configuration: fewest diverged seeds, then the best mean ``select``."""
    ranked = configs.assign(_div=configs["n_diverged"] / configs["n_runs"],
                            _score=-configs[select] if select.endswith("accuracy") else configs[select])
    ranked = ranked.sort_values(["_div", "_score", "lr"], na_position="last", kind="stable")
    return ranked.groupby(list(CELL), sort=False).head(1).drop(columns=["_div", "_score"]).reset_index(drop=True)


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


def per_trial(g: pd.DataFrame, by_steps: bool) -> pd.DataFrame:
    """One line per tuning trial of a cell (a trial trained at several tuning seeds has a run per
    seed): its lr, whether any seed diverged or was pruned, ``steps`` (mean steps to target, NaN
    unless every seed reached it) and its ``score``, the tuner's value: the mean over its seeds of
    :func:`_tuner_values` when trials were ranked by steps, else the mean final validation loss."""
    keys = ["study", "trial"] if {"study", "trial"} <= set(g) and g["trial"].notna().all() else ["run_id"]
    g = g.assign(_div=g["diverged"].astype(bool), _pruned=g["pruned"].astype(bool) & ~g["diverged"].astype(bool),
                 _value=_tuner_values(g) if by_steps else g["final_val_loss"])
    out = g.groupby(keys, sort=False, dropna=False).agg(
        lr=("lr", "first"), diverged=("_div", "any"), pruned=("_pruned", "any"), score=("_value", "mean"),
        final_val_loss=("final_val_loss", "mean"), steps=("steps_to_target", lambda s: s.mean(skipna=False)))
    out = out.reset_index()
    out["number"] = out["trial"] if "trial" in out else range(len(out))  # the tuner breaks ties by trial number
    return out


def trial_stats(runs: pd.DataFrame, tolerance: float = 0.1, metric: str | Callable[[str], str] = "val_loss"
                ) -> pd.DataFrame:
    """Per cell, from its tuning trials: divergence, largest stable lr and the divergence boundary
    (from runs), the best trial and the lr sensitivity (from trials, on the tuner's objective:
    steps to target where the trials were trained with a target, i.e. under the target protocol,
    else the final ``metric``, a name or a function of the task name giving it).

    Pruned trials stopped early, so they are counted but not used for the best trial or the
    sensitivity; a trial any of whose seeds diverged counts as diverged, as the tuner scores it.
    """
    out = []
    for key, g in runs[runs["is_trial"]].groupby(list(CELL), sort=False):
        task = g["task"].iloc[0]
        steps = _trained_to_target(g)
        trials = per_trial(g, steps)
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
        out.append(dict(zip(CELL, key), task=task, batch_label=g["batch_label"].iloc[0],
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


def _tuner_values(runs: pd.DataFrame) -> pd.Series:
    """Each run's value as the tuner scored it under the target protocol: its steps to the target,
    else (it ran to its cap, ``steps``) :func:`unreached_value` of its shortfall."""
    target = Target(**json.loads(runs["config_key"].iloc[0])["target"])
    short = [target.shortfall(i, f) for i, f in zip(runs[f"initial_{target.metric}"], runs[f"final_{target.metric}"])]
    missed = [unreached_value(cap, s) for cap, s in zip(runs["steps"], short)]
    return runs["steps_to_target"].where(runs["steps_to_target"].notna(), pd.Series(missed, index=runs.index))


def trained_to_target(config_key: str) -> bool:
    """Whether a configuration was trained with a target: under the target protocol (trials ranked
    by their steps to it), else the budget protocol (the protocol is derived, never tagged)."""
    return json.loads(config_key).get("target") is not None


def protocol_parts(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Runs or cells by the protocol they were trained under (``target`` first, then ``budget``),
    from their configuration; parts with nothing in them left out."""
    to_target = frame["config_key"].map(trained_to_target).astype(bool) if len(frame) else frame.index == 0
    parts = {"target": frame[to_target], "budget": frame[~to_target]}
    return {name: part for name, part in parts.items() if len(part)}


def _trained_to_target(trials: pd.DataFrame) -> bool:
    """Whether a cell's trials were trained with a target (and so ranked by their steps to it)."""
    return trained_to_target(trials["config_key"].iloc[0])


def _best_trial(finished: pd.DataFrame) -> pd.Series | None:
    """The tuner's choice: least score, ties to the earlier trial (a trial that did not reach the
    target ranks behind every one that did, and among those the least final validation loss)."""
    if finished.empty or not (finished["score"].notna() | finished["final_val_loss"].notna()).any():
        return None
    order = finished.assign(_s=finished["score"].fillna(math.inf), _v=finished["final_val_loss"].fillna(math.inf))
    scored = order["score"].notna().any()
    return order.sort_values(["_s", "number"] if scored else ["_v", "number"], kind="stable").iloc[0]


def ranks(values: pd.DataFrame, maximize: bool = False) -> pd.DataFrame:
    """Rank the columns of each row (1 = best, ties share the lowest rank, NaN ranks last).
    A row with no value at all compares nothing: its ranks are NaN (left out of mean ranks)."""
    r = values.rank(axis=1, ascending=not maximize, method="min", na_option="bottom")
    return r.where(values.notna().any(axis=1), axis=0)


def performance_profile(cost: pd.DataFrame, taus: Iterable[float]) -> pd.DataFrame:
    """Dolan–Moré profile: for each tau, the fraction of problems (rows) on which an optimizer
    (column) costs at most tau × the best cost on that problem; NaN cost = failed (never counted)."""
    ratio = cost.div(cost.min(axis=1), axis=0)
    taus = list(taus)
    return pd.DataFrame({t: (ratio <= t).sum() / len(cost) for t in taus}).T.rename_axis("tau")

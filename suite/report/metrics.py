"""Convergence metrics from stored rows only (pandas + numpy: no torch, never trains).

A *run* is one ``run_id``; its rows are its evaluation points. The pipeline:
``annotate`` (labels, configuration key, trial flag) -> ``summarize_runs`` (one line per run)
-> ``aggregate`` (the runs of one configuration, over seeds: mean and a seeded bootstrap
interval) -> ``pick_best`` (each cell's best configuration). ``trial_stats`` reads a cell's
tuning trials: divergence, largest stable lr, lr sensitivity. Conventions:

- *final* = the last evaluation row; *best* = the best value over all evaluation rows. A
  diverged run has no final value (NaN: its loss exploded) and is counted in ``n_diverged``.
- *to-target* = the first evaluation row whose target metric meets the task's target
  (``<=`` for losses, ``>=`` for accuracies); NaN = not reached. The resolution is the
  evaluation schedule: the true crossing lies between that row and the one before.
- *throughput* = training samples after the warm-up steps / training-clock seconds (the
  clock excludes evaluation and the untimed warm-up steps).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from suite.types import METRICS, ConfigError

# One matrix cell; task_label separates runs of one task with different task options.
CELL = ("task_label", "optimizer", "batch_size", "micro_batch", "accumulation_steps", "sampling",
        "accumulation_reduction")
SAMPLING_MARK = {"shuffle": "", "sequential": " seq", "replacement": " repl"}


@dataclass(frozen=True)
class Target:
    """``metric`` reaches ``value`` (absolute) or ``relative`` × its value at step 0."""

    metric: str
    value: float | None = None
    relative: float | None = None

    def __post_init__(self):
        where = f"target {{metric: {self.metric}, value: {self.value}, relative: {self.relative}}}"
        if self.metric not in METRICS:
            raise ConfigError(f"{where}: unknown metric; valid: {', '.join(METRICS)}.")
        if (self.value is None) == (self.relative is None):
            raise ConfigError(f"{where}: give exactly one of value (absolute) or relative (fraction of step 0).")
        if self.relative is not None and (self.maximize or not 0 < self.relative):
            raise ConfigError(f"{where}: relative targets are for losses and must be > 0; "
                              f"give accuracies an absolute value.")

    @property
    def maximize(self) -> bool:
        return self.metric.endswith("accuracy")

    def thresholds(self, initial: pd.Series) -> pd.Series:
        return initial * self.relative if self.relative is not None else initial * 0 + self.value

    def describe(self) -> str:
        op = "≥" if self.maximize else "≤"
        return (f"{self.metric} {op} {self.relative:g} × its step-0 value" if self.relative is not None
                else f"{self.metric} {op} {self.value:g}")


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
    """Add ``task_label``, ``batch_label``, ``config_key`` (the config minus seed) and ``is_trial``."""
    configs = rows.groupby("run_id", sort=False)["config"].first().map(json.loads)
    key = configs.map(lambda c: json.dumps({k: v for k, v in c.items() if k != "seed"}, sort_keys=True))
    options = configs.map(lambda c: json.dumps(c.get("task_options", {}), sort_keys=True))
    out = rows.copy()
    out["config_key"] = out["run_id"].map(key)
    out["task_label"] = _task_labels(out["task"], out["run_id"].map(options))
    out["is_trial"] = out["trial"].notna() if "trial" in out else False
    labels = {k: batch_label(*k) for k in out.groupby(
        ["batch_size", "micro_batch", "accumulation_steps", "regime", "sampling", "accumulation_reduction"]).groups}
    out["batch_label"] = [labels[k] for k in zip(out["batch_size"], out["micro_batch"], out["accumulation_steps"],
                                                 out["regime"], out["sampling"], out["accumulation_reduction"])]
    return out


TO_TARGET = {"step": "steps_to_target", "epoch": "epochs_to_target", "samples": "samples_to_target",
             "time_s": "seconds_to_target"}
STATIC = (*CELL, "task", "model", "batch_label", "regime", "lr", "seed", "config_key", "is_trial",
          "diverged", "diverged_step", "pruned", "n_train", "warmup_steps")


def summarize_runs(rows: pd.DataFrame, targets: Mapping[str, Target]) -> pd.DataFrame:
    """One line per run: final/best metrics, to-target, throughput. ``rows`` from :func:`annotate`."""
    rows = rows.sort_values(["run_id", "step"], kind="stable")
    groups = rows.groupby("run_id", sort=False)
    first, last = groups.head(1).set_index("run_id"), groups.tail(1).set_index("run_id")
    extra = [c for c in ("study", "trial") if c in rows]
    out = last[[*STATIC, *extra]].copy()
    out["steps"], out["epochs"], out["time_s"] = last["step"], last["epoch"], last["time_s"]
    alive = ~last["diverged"].astype(bool)
    for m in METRICS:
        out[f"initial_{m}"] = first[m]
        out[f"final_{m}"] = last[m].where(alive)
        out[f"best_{m}"] = groups[m].max() if m.endswith("accuracy") else groups[m].min()
    timed = (last["step"] - last["warmup_steps"]).clip(lower=0) * last["batch_size"]
    out["throughput"] = (timed / last["time_s"]).where((last["time_s"] > 0) & (timed > 0))
    hits = pd.concat([_first_hits(sub, targets[task]) for task, sub in rows.groupby("task") if task in targets]
                     or [pd.DataFrame(columns=["step", "epoch", "samples", "time_s"])])
    for col, name in TO_TARGET.items():
        out[name] = hits[col].reindex(out.index).astype(float)
    out["has_target"] = out["task"].isin(list(targets))
    out["reached"] = out["steps_to_target"].notna()
    return out.reset_index()


def _first_hits(rows: pd.DataFrame, target: Target) -> pd.DataFrame:
    """The first row of each run that meets ``target`` (indexed by run_id)."""
    value = rows[target.metric]
    initial = rows.groupby("run_id")[target.metric].transform("first")
    limit = target.thresholds(initial)
    meets = value >= limit if target.maximize else value <= limit
    return rows[meets.fillna(False)].groupby("run_id").head(1).set_index("run_id")


def bootstrap_ci(values: Iterable[float], resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean and the percentile bootstrap interval of the mean (NaNs dropped; seeded, so repeatable)."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    if len(x) == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0]), float(x[0])
    means = x[np.random.default_rng(seed).integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(x.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


SUMMARY_COLUMNS = (*(f"{k}_{m}" for k in ("final", "best") for m in METRICS), "throughput", *TO_TARGET.values())


def aggregate(runs: pd.DataFrame, by: Iterable[str] = (*CELL, "config_key"), columns=SUMMARY_COLUMNS,
              resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """The runs of each group over seeds: ``col`` (mean), ``col_lo``/``col_hi`` (bootstrap CI), counts."""
    by = list(by)
    keep = ["task", "model", "batch_label", "regime", "lr", "has_target"]
    out = []
    for key, g in runs.groupby(by, sort=False, dropna=False):
        line = dict(zip(by, key), **{k: g[k].iloc[0] for k in keep if k not in by},
                    n_runs=len(g), n_seeds=g["seed"].nunique(), n_diverged=int(g["diverged"].sum()),
                    n_reached=int(g["reached"].sum()), run_ids=",".join(g["run_id"]))
        for col in columns:
            line[col], line[f"{col}_lo"], line[f"{col}_hi"] = bootstrap_ci(g[col], resamples, confidence, seed)
        out.append(line)
    return pd.DataFrame(out)


def final_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of every configuration that has at least one final (untagged) run.

    A trial with exactly a final configuration has its run id, so it *is* that run (the study
    skips it as stored): such trial rows count as that seed of the final configuration.
    """
    return runs[runs["config_key"].isin(runs.loc[~runs["is_trial"], "config_key"])]


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


def trial_stats(runs: pd.DataFrame, tolerance: float = 0.1) -> pd.DataFrame:
    """Per cell, from its tuning trials: divergence, largest stable lr, best trial, lr sensitivity.

    Pruned trials stopped early, so they are counted but not used for the loss-based numbers.
    """
    out = []
    for key, g in runs[runs["is_trial"]].groupby(list(CELL), sort=False):
        done = g[~g["pruned"].astype(bool) | g["diverged"].astype(bool)]
        div = done["diverged"].astype(bool)
        lrs_div = done.groupby("lr")["diverged"].any()
        finished = done[~div]
        best = finished.loc[finished["final_val_loss"].idxmin()] if finished["final_val_loss"].notna().any() else None
        width, low, high = sensitivity(done["lr"], done["final_val_loss"], div, tolerance)
        out.append(dict(zip(CELL, key), task=g["task"].iloc[0], batch_label=g["batch_label"].iloc[0],
                        n_trials=len(g), n_usable=len(finished),
                        n_pruned=int((g["pruned"].astype(bool) & ~g["diverged"]).sum()),
                        n_diverged=int(div.sum()), n_lrs=int(g["lr"].nunique()),
                        frac_lrs_diverged=float(lrs_div.mean()) if len(lrs_div) else math.nan,
                        largest_stable_lr=float(finished["lr"].max()) if len(finished) else math.nan,
                        best_trial_lr=float(best["lr"]) if best is not None else math.nan,
                        best_trial_val_loss=float(best["final_val_loss"]) if best is not None else math.nan,
                        sensitivity_decades=width, sensitivity_low_lr=low, sensitivity_high_lr=high))
    return pd.DataFrame(out)


def mark_fallback(cells: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """``cells`` with ``lr_fallback``: tuned (it has trials) but no trial finished without diverging
    or being pruned, so its final runs use the optimizer registry's default lr."""
    out = cells.copy()
    if not len(out):
        return out.assign(lr_fallback=pd.Series(dtype=bool))
    if not len(trials):
        return out.assign(lr_fallback=False)
    empty = {tuple(k) for k in trials.loc[trials["n_usable"] == 0, list(CELL)].itertuples(index=False)}
    out["lr_fallback"] = [tuple(k) in empty for k in out[list(CELL)].itertuples(index=False)]
    return out


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

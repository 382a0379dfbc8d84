"""Convergence metrics from stored rows only (pandas + numpy: no torch, never trains).

A *run* is one ``run_id``; its rows are its evaluation points. The pipeline:
``annotate`` (labels, configuration key, trial and extra-run flags, protocol part, re-tuning) ->
``summarize_runs`` (one line per run) -> ``aggregate`` (the runs of one configuration, over seeds)
-> ``pick_best`` (each cell's best configuration). :mod:`suite.report.data.trials` reads a cell's
tuning trials, :mod:`suite.report.data.reported` which configurations a study abandoned.
Conventions:

- *final* = the last evaluation row; *best* = the best value over all evaluation rows. A
  diverged run has no final value (NaN: its loss exploded) and is counted in ``n_diverged``; a
  run that finished without learning is *collapsed* (:func:`suite.types.collapsed`); either is a
  *failed* run (``n_failed``).
- *to-target*: :mod:`suite.report.data.to_target` (exact steps where the run was trained with the
  target, else the first evaluation that meets it; unreached runs are censored, with the reason),
  summarized over seeds by the median over all of them (:mod:`suite.report.stats.censored`).
- *throughput* = training samples after the warm-up steps / training-clock seconds (the
  clock excludes evaluation and the untimed warm-up steps).
- Runs tagged with a ``purpose`` (e.g. ``theory``, ``lr_scaling``) are a study's extra
  experiments: never a final run of a cell, never a trial.
"""
from __future__ import annotations

import json
import math
from typing import Iterable, Mapping

import pandas as pd

from suite.report.data import to_target
from suite.report.data.protocol import part_of
from suite.report.stats.censored import median_interval
from suite.report.stats.seeds import t_interval
from suite.types import METRICS, Target, collapsed
from suite.cell import CELL_AXES, Cell

# One matrix cell: a Cell's axes, task_label for its task (it separates runs of one task with different
# task options), part its protocol (a target cell and a budget cell of one batch are two), micro_batch kept.
CELL = ("task_label", "part", *CELL_AXES[1:], "micro_batch")
TUNED_CELL = (*CELL, "retune")  # a cell and one of its tunings: each has its own trials and reported configuration


def _task_labels(tasks: pd.Series, options: pd.Series) -> pd.Series:
    """Task name, plus the task options that differ between its runs (e.g. ``mnist (model=cnn)``)."""
    labels = tasks.copy()
    for name in tasks.unique():
        mask = tasks == name
        opts = {text: json.loads(text) for text in options[mask].unique()}  # runs share their options
        keys = sorted({k for o in opts.values() for k in o})
        varying = [k for k in keys if len({json.dumps(o.get(k), sort_keys=True) for o in opts.values()}) > 1]
        if varying:
            named = {text: f"{name} ({', '.join(f'{k}={o.get(k)}' for k in varying)})" for text, o in opts.items()}
            labels[mask] = options[mask].map(named)
    return labels


def _config_facts(text: str) -> tuple[str, str, str]:
    """What the report needs of a run's config: its key (the config minus seed), its task options
    (both as JSON) and its protocol part. A parsed config is a hundred Python objects; a 100k-run
    store's would take a GiB at once."""
    config = json.loads(text)
    return (json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True),
            json.dumps(config.get("task_options", {}), sort_keys=True), part_of(config))


def annotate(rows: pd.DataFrame) -> pd.DataFrame:
    """Add ``task_label``, ``batch_label``, ``config_key`` (the config minus seed), ``is_trial``,
    ``is_extra`` (a run tagged with a ``purpose``), ``part`` (its protocol, from its config: ``target``
    or ``budget``; "" for an extra run) and ``retune`` (which re-tuning of its cell; 0 = the primary)."""
    texts = rows.groupby("run_id", sort=False)["config"].first().astype(str)
    facts = {text: _config_facts(text) for text in texts.unique()}  # parsed once each, only the facts kept
    key, options, part = (texts.map({text: f[i] for text, f in facts.items()}) for i in range(3))
    out = rows.copy(deep=False)  # copy-on-write: the stored rows are shared, never changed, until a column is set
    # Dictionary-encoded (RunStore.load's already is; a baseline's rows beside it come as text): a run's
    # JSON repeats on each of its rows, and every filter of the frame would copy those strings.
    out["config"] = out["config"].astype("category")
    out["config_key"] = out["run_id"].map(key.astype("category"))  # mapped as codes: no string per row
    tasks = rows.groupby("run_id", sort=False)["task"].first()
    out["task_label"] = out["run_id"].map(_task_labels(tasks, options))  # per run: one JSON parse each
    out["is_trial"] = out["trial"].notna() if "trial" in out else False
    out["is_extra"] = out["purpose"].notna() & (out["purpose"].astype(str) != "") if "purpose" in out else False
    out["part"] = out["run_id"].map(part).where(~out["is_extra"], "")
    out["retune"] = out["retune"].fillna(0).astype(int) if "retune" in out else 0
    keys = [*CELL_AXES, "n_train"]
    runs = out.drop_duplicates("run_id")  # a run's axes are on each of its rows: labelled per run
    labels = {k: Cell(**dict(zip(keys, k))).label for k in runs.groupby(keys).groups}
    out["batch_label"] = out["run_id"].map(pd.Series([labels[k] for k in zip(*(runs[c] for c in keys))],
                                                     index=runs["run_id"]))
    return out


TO_TARGET = to_target.TO_TARGET
STATIC = (*TUNED_CELL, "task", "model", "batch_label", "regime", "lr", "seed", "config_key", "is_trial", "is_extra",
          "diverged", "diverged_step", "pruned", "n_train", "warmup_steps", "stack_size", "dtype", "optimal_loss")
TAGS = ("study", "trial", "purpose")


def summarize_runs(rows: pd.DataFrame, targets: Mapping[str, Target]) -> pd.DataFrame:
    """One line per run: final/best metrics, ``collapsed`` and ``failed`` (diverged or collapsed,
    :func:`suite.types.collapsed`), to-target and censoring, throughput. ``rows`` from :func:`annotate`."""
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
    out["collapsed"] = alive & pd.Series([collapsed(*v) for v in zip(
        first["val_loss"], last["val_loss"], first["val_accuracy"], last["val_accuracy"])], index=last.index)
    out["failed"] = ~alive | out["collapsed"]
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


CAPPED = ("cap", "time limit")  # censored by what the run was allowed, not by failing: its steps bound the count
SUMMARY_COLUMNS = (*(f"{k}_{m}" for k in ("final", "best") for m in METRICS), "throughput", *TO_TARGET.values())


def aggregate(runs: pd.DataFrame, by: Iterable[str] = (*TUNED_CELL, "config_key"), columns=SUMMARY_COLUMNS,
              confidence: float = 0.95) -> pd.DataFrame:
    """The runs of each group over seeds: ``col`` and ``col_lo``/``col_hi``, counts (``n_failed`` =
    diverged + collapsed), and for to-target: the widest bracket, the last step of the seeds that
    did not reach it (``cap_steps``) and of those that ran out of steps (``step_cap``: the cap, not
    where a failed seed stopped).
    A final metric is the mean with its Student-t interval (NaN with one seed); a count to the
    target the median over all seeds with its order-statistic interval (:mod:`..stats.censored`:
    ``to_target_censored`` when fewer than half reached it, ``to_target_coverage`` the interval's
    coverage)."""
    by = list(by)
    keep = ["task", "model", "batch_label", "regime", "lr", "has_target", "dtype", "optimal_loss"]
    out = []
    for key, g in runs.groupby(by, sort=False, dropna=False):
        line = dict(zip(by, key), **{k: g[k].iloc[0] for k in keep if k not in by and k in g},
                    n_runs=len(g), n_seeds=g["seed"].nunique(), n_diverged=int(g["diverged"].sum()),
                    n_collapsed=int(g["collapsed"].sum()), n_failed=int(g["failed"].sum()),
                    n_reached=int(g["reached"].sum()), n_censored=int(g["censored"].sum()),
                    cap_steps=g["cap_steps"].max(), step_cap=g.loc[g["censor_reason"].isin(CAPPED), "cap_steps"].max(),
                    to_target_bracket=g["to_target_bracket"].max(),
                    censor_reasons=", ".join(sorted(set(g["censor_reason"]) - {""})),
                    run_ids=",".join(g["run_id"]))
        for col in columns:
            if col in TO_TARGET.values():  # without a target, nothing to count (NaN)
                counts = g[col].fillna(math.inf) if line.get("has_target", True) else g[col]
                median, lo, hi, coverage = median_interval(counts, confidence)
                censored = not math.isfinite(median)
                line[col], line[f"{col}_lo"], line[f"{col}_hi"] = math.nan if censored else median, lo, hi
                if col == TO_TARGET["step"]:  # steps decide; seconds may be unmeasured (a baseline's clock)
                    line["to_target_coverage"] = coverage
                    line["to_target_censored"] = bool(line["has_target"]) and censored
                continue
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
    """Each cell's (and re-tuning's) best configuration: fewest failed seeds, then the best mean
    ``select`` (a tuned cell has one configuration once abandoned ones are left out)."""
    ranked = configs.assign(_div=configs["n_failed"] / configs["n_runs"],
                            _score=-configs[select] if select.endswith("accuracy") else configs[select])
    ranked = ranked.sort_values(["_div", "_score", "lr"], na_position="last", kind="stable")
    return ranked.groupby(list(TUNED_CELL), sort=False).head(1).drop(columns=["_div", "_score"]).reset_index(drop=True)


def trained_to_target(config_key: str) -> bool:
    """Whether a configuration was trained with a target: the target part (:func:`part_of`)."""
    return part_of(json.loads(config_key)) == "target"


def protocol_parts(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Runs or cells by the protocol part they were trained under (``target`` first, then
    ``budget``), from their configuration; parts with nothing in them left out."""
    to_target = frame["config_key"].map(trained_to_target).astype(bool) if len(frame) else frame.index == 0
    parts = {"target": frame[to_target], "budget": frame[~to_target]}
    return {name: part for name, part in parts.items() if len(part)}


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

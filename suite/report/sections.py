"""The report's sections: per task (its tables and figures) and across tasks. Each returns a
:class:`suite.report.readme.Section`; the batch-size science lives in :mod:`suite.report.science.section`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from suite.report.benchmarks import load_benchmarks, throughput_table
from suite.report.data.metrics import performance_profile, protocol_parts
from suite.report.data.protocol import load_text
from suite.report.figures import curves, scaling
from suite.report.readme import Context, Section, per_task, scaling_cells, slug, task_order
from suite.report.tables.comparison import marks_note, pivot, profile, ranking, summary
from suite.report.tables.render import fmt
from suite.report.tables.tuning import tuning_table
from suite.store.runs import RunStore
from suite.types import StoreError


def _target_intro(ctx: Context, name: str, runs: pd.DataFrame) -> str:
    target = ctx.targets.get(name)
    if not target:
        return f"No target for `{name}`: to-target tables and figures are omitted."
    measured = runs[runs["reached"]]
    exact = measured["target_source"] == "exact"
    how = f"steps to target located exactly (replay, to 5% or one step) for {int(exact.sum())} of the " \
          f"{len(measured)} runs that reached it"
    if not exact.all():
        widest = fmt(measured.loc[~exact, "to_target_bracket"].max(), "count")
        how += f"; the others at their first evaluation that meets it (bracket up to {widest} steps)"
    return f"Target: {target.describe()} ({ctx.sources.get(name, 'conf/report.yaml')}); {how}."


def representative(cells: pd.DataFrame, primary: str, n: int) -> pd.DataFrame:
    """Up to ``n`` cells, batch sizes spread over the range, the best optimizer of each (its first seed)."""
    plain = scaling_cells(cells)
    sizes = sorted(plain["batch_size"].unique())
    picked = [sizes[i] for i in sorted({int(round(x)) for x in np.linspace(0, len(sizes) - 1, min(n, len(sizes)))})]
    out = []
    for size in picked:
        c = plain[plain["batch_size"] == size]
        score = -c[primary] if primary.endswith("accuracy") else c[primary]
        best = c.loc[score.where(c["n_diverged"] == 0).fillna(np.inf).idxmin()]
        out.append({"run_id": sorted(best["run_ids"].split(","))[0], "batch_label": best["batch_label"],
                    "optimizer": best["optimizer"]})
    return pd.DataFrame(out, columns=["run_id", "batch_label", "optimizer"])


def bench_throughput(ctx: Context, name: str, cells: pd.DataFrame) -> pd.DataFrame | None:
    """The cells' throughput from ``bench/*.json`` (train-step benchmarks of this task), preferring
    the implementation the runs used; ``None`` where the benchmarks do not cover the task."""
    if not list((ctx.root / "bench").glob("*.json")):
        return None
    try:
        table = throughput_table(load_benchmarks(ctx.root / "bench"))
    except StoreError:
        return None  # the Benchmarks section says why
    t = table[table["kind"].isin(["train-step", "accumulation"]) & (table["task"] == name)]
    if t.empty:
        return None
    used = ctx.rows[ctx.rows["task"] == name].groupby("optimizer")["optimizer_impl"].agg(lambda s: s.mode().iloc[0])
    t = t.assign(_used=t["impl"] == t["optimizer"].map(used), batch_size=t["batch_size"].astype(int),
                 accumulation_steps=t["accumulation_steps"].astype(int))
    t = t.sort_values(["_used", "samples_per_s"], ascending=False).drop_duplicates(
        ["optimizer", "batch_size", "accumulation_steps"])
    merged = cells.drop(columns="throughput").merge(
        t[["optimizer", "batch_size", "accumulation_steps", "samples_per_s", "threads"]], how="left")
    return merged.assign(throughput=merged["samples_per_s"]) if merged["samples_per_s"].notna().any() else None


def _throughput(ctx: Context, sec: Section, name: str, cells: pd.DataFrame, runs: pd.DataFrame, tables) -> None:
    bench = bench_throughput(ctx, name, cells)
    if bench is not None:
        threads = "/".join(map(str, sorted(bench["threads"].dropna().astype(int).unique())))
        sec.add(pivot(bench, "throughput", "throughput", f"Throughput from `bench/*.json` (`make bench`: "
                      f"pytest-benchmark median of rounds, {threads} torch thread(s), the runs' implementation where "
                      f"benchmarked): training samples per second (—: not benchmarked); no best marked.",
                      style="plain"), tables)
        return
    load = load_text(ctx.rows[ctx.rows["task"] == name], ctx.study, ctx.env)
    sec.add(pivot(cells, "throughput", "throughput", f"Throughput, training samples per training-clock second "
                  f"after warm-up (—: no timed step), {load}; {marks_note(ctx.alpha, _seeds(cells))}.", style="plain",
                  maximize=True, runs=runs, alpha=ctx.alpha), tables)


def _seeds(cells: pd.DataFrame) -> int:
    return int(cells["n_seeds"].max()) if len(cells) else 0


def _cell_tables(ctx: Context, sec: Section, name: str, cells: pd.DataFrame, tables) -> None:
    conf, note = ctx.cfg.statistics.confidence, marks_note(ctx.alpha, _seeds(cells))
    for metric in per_task(ctx.cfg.final_metrics, name):
        sec.add(pivot(cells, f"final_{metric}", f"final_{metric}", f"Final {metric} (mean over seeds "
                      f"[{conf:.0%} t-interval]); {note}.", maximize=metric.endswith("accuracy"), runs=ctx.runs,
                      alpha=ctx.alpha), tables)
    if name in ctx.targets:
        for col, what in (("steps_to_target", "Steps"), ("seconds_to_target", "Training-clock seconds")):
            sec.add(pivot(cells, col, col, f"{what} to reach the target ({ctx.targets[name].describe()}; mean "
                          f"[{conf:.0%} t-interval]; censored = no seed reached it within its step cap, shown with "
                          f"the cap); fewest is best: {note}.", style="target", maximize=False, runs=ctx.runs,
                          alpha=ctx.alpha), tables)
    sec.add(pivot(cells, "lr", "best_lr", "Learning rate of each cell's reported configuration (tuned where a "
                  "study tuned it); no best marked: an lr is a setting, not a score.", style="plain"), tables)


def task_section(ctx: Context, task: str) -> Section:
    """One task's tables and figures; returns its README section."""
    sec = Section(task)
    cells = ctx.cells[ctx.cells["task_label"] == task] if len(ctx.cells) else ctx.cells
    runs = ctx.runs[ctx.runs["task_label"] == task]
    trials = ctx.trials[ctx.trials["task_label"] == task] if len(ctx.trials) else ctx.trials
    name = runs["task"].iloc[0]
    tables, figures = ctx.out / "tables" / slug(task), ctx.out / "figures" / slug(task)
    sec.intro.append(_target_intro(ctx, name, runs))
    if len(cells) == 0:
        sec.notes.append("no final runs yet (only tuning trials): the optimizer × batch-size tables, the loss curves "
                         "and the throughput figure are omitted.")
    else:
        primary = per_task(ctx.cfg.final_metrics, name)
        _cell_tables(ctx, sec, name, cells, tables)
        _throughput(ctx, sec, name, cells, runs, tables)
        sec.ranking = ranking(cells, f"final_{primary[0]}", primary[0].endswith("accuracy"),
                              trials if len(trials) else None, ctx.runs, ctx.alpha)
        sec.add(sec.ranking, tables)
        _cell_figures(ctx, sec, name, cells, runs, figures, f"final_{primary[0]}")
    trial_runs = runs[runs["is_trial"]]
    if len(trial_runs):
        sec.add(tuning_table(trials, ctx.cfg.sensitivity_tolerance), tables)
        metric = per_task(ctx.cfg.sensitivity_metric, name)
        parts = protocol_parts(trial_runs)
        for part, part_runs in parts.items():  # each part's trials on its own objective
            stem = "lr_sensitivity" + (f"_{part}" if len(parts) > 1 else "")
            path, objective = curves.sensitivity(part_runs, figures / stem, ctx.opts, metric)
            missed = ("▲ with an arrow: some tuning seed did not reach the target (at the steps it ran)"
                      if objective == "steps to target" else "hollow: pruned (its last evaluation)")
            sec.fig(path, f"{part.capitalize()} part: the tuner's objective, {objective} (mean over a trial's tuning "
                    f"seeds), vs lr for every tuning trial (log-log); ✕ on the top edge: diverged; {missed}.")
    else:
        sec.notes.append("no tuning trials stored: the lr-sensitivity figure and the tuning table (divergence, "
                         "largest stable lr, sensitivity) are omitted.")
    return sec


def _cell_figures(ctx: Context, sec: Section, name: str, cells: pd.DataFrame, runs: pd.DataFrame, figures,
                  primary: str) -> None:
    parts = protocol_parts(cells)  # curves show final metrics: the budget part where there is one
    at_end = parts.get("budget", cells)
    chosen = ctx.rows[ctx.rows["run_id"].isin(",".join(at_end["run_ids"]).split(","))]
    curve, seeds = per_task(ctx.cfg.curve_metric, name), int(cells["n_seeds"].max())
    label = curves.label(curve, chosen)
    for x, stem, what in (("epoch", "loss_vs_epoch", "epochs"),
                          ("time_s", "loss_vs_time", "training-clock seconds (eval and warm-up excluded)")):
        notes: list[str] = []
        path = curves.curves(chosen, curve, x, figures / stem, ctx.opts, notes)
        sec.fig(path, f"{label} vs {what}; {curves.spread(seeds, ctx.opts)}; log-log." +
                "".join(f" ({n}.)" for n in notes))
    if ctx.cfg.figures.minibatch:
        picks = representative(at_end, primary, int(ctx.cfg.figures.representative))
        traces = RunStore(ctx.root).load_traces(picks["run_id"])
        path = curves.minibatch(ctx.rows, traces, picks, figures / "minibatch_loss", ctx.opts)
        sec.fig(path, f"Every step's mini-batch loss (line: bin mean; band: min–max where steps are binned) beside the "
                f"training loss on the {curves.training_set(chosen)} at the evaluations, for representative cells "
                f"(the best optimizer at batch sizes across the range, first seed), against the updates the "
                f"parameters had (a step's mini-batch loss is computed before its update); log-log.")
        if path is None:
            sec.notes.append("no per-step traces stored (runs written before traces existed): the mini-batch loss "
                             "figure is omitted.")
    plain = scaling_cells(parts.get("target", cells))  # steps to target: the target part where there is one
    if name in ctx.targets:
        spread = ("one point per seed that reached the target" if curves.individual(seeds, ctx.opts) else
                  f"whiskers: the median's distribution-free order-statistic interval over seeds (at least "
                  f"{ctx.opts.confidence:.0%} coverage from 6 seeds; an end on an unreached seed runs to the top)")
        sec.fig(scaling.scaling(plain, ctx.runs, figures / "steps_to_target", ctx.opts),
                f"Median steps to target over seeds vs batch size (log-log), {spread}; lines join only exact medians; "
                f"▲ with an arrow: censored (fewer than half of the seeds reached it within the cap; the median "
                f"lies above); ✕ on the top edge: most seeds diverged; red ring: lr at an edge of its search range; "
                f"dashed: perfect scaling from the smallest batch with an exact median.")
    for part, part_cells in parts.items():  # each part's lrs were tuned for its own objective
        sec.fig(scaling.best_lr(scaling_cells(part_cells), ctx.runs,
                                figures / ("best_lr" + (f"_{part}" if len(parts) > 1 else "")), ctx.opts),
                f"{part.capitalize()} part: reported lr vs batch size (log-log), one panel per optimizer, with the "
                f"linear and square-root scaling rules drawn from the optimizer's own smallest batch whose lr is an "
                f"interior optimum (of a cell that reached the target, under the target protocol); open: a censored or "
                f"failed cell's lr (no optimum of steps to target), not joined; red ring: optimum at an edge of its "
                f"search range; ✕: registry-default lr.")
    path, what = scaling.throughput(runs[runs["run_id"].isin(chosen["run_id"])], figures / "throughput", ctx.opts)
    sec.fig(path, f"Training samples per second (log) per optimizer and batch size; bars: mean over seeds, {what}; "
            f"{load_text(chosen, ctx.study, ctx.env)}.")


def cross_task(ctx: Context) -> Section:
    sec = Section("Across tasks")
    if len(ctx.cells) == 0:
        return sec
    tables = ctx.out / "tables"
    ranks, primary = {}, {}
    for task in task_order(ctx.runs):
        cells = ctx.cells[ctx.cells["task_label"] == task]
        if len(cells):
            primary[task] = f"final_{per_task(ctx.cfg.final_metrics, cells['task'].iloc[0])[0]}"
            ranks[task] = ranking(cells, primary[task], primary[task].endswith("accuracy"), None, ctx.runs,
                                  ctx.alpha)
    sec.add(summary(ranks, primary), tables)
    # the target part's cells; one problem per update: an accumulation cell (64×16) is the same update as 1024
    in_target = protocol_parts(ctx.cells).get("target", ctx.cells)
    problems = pd.concat([scaling_cells(g) for _, g in in_target.groupby("task_label", sort=False)])
    problems = problems[problems["has_target"]]
    solved = problems[problems["n_reached"] == problems["n_runs"]]
    if len(solved):
        table, cost = profile(problems.assign(
            steps_to_target=problems["steps_to_target"].where(problems["n_reached"] == problems["n_runs"])))
        sec.add(table, tables)
        worst = float(cost.div(cost.min(axis=1), axis=0).max().max())
        taus = np.geomspace(1, max(2.0, 1.2 * worst), 200)
        sec.fig(curves.profile(performance_profile(cost, taus), ctx.out / "figures" / "performance_profile", ctx.opts),
                "Performance profile on steps-to-target: the fraction of problems (task × batch size; an accumulation "
                "cell counts as the batch it emulates, the same update) an optimizer solves within τ × the best "
                "optimizer's steps; higher and further left is better.")
    return sec

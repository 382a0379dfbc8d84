"""The report's per-task sections, one per protocol part the task's runs belong to (its tables and
figures): the target part's counts to the target, the budget part's final metrics, and for each the
reported lr, throughput, ranking and tuning. Each returns a :class:`suite.report.readme.Section`;
the sections across tasks live in :mod:`suite.report.across`, the batch-size science in
:mod:`suite.report.science.section`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from suite.report.benchmarks import load_benchmarks, throughput_table
from suite.report.data.metrics import protocol_parts
from suite.report.data.protocol import load_text, trained_alone
from suite.report.figures import curves, scaling
from suite.report.readme import Context, Section, of, per_task, scaling_cells
from suite.report.stats.resolution import ROUNDOFF_MULTIPLE
from suite.report.tables.comparison import Score, marks_note, pivot, ranking
from suite.report.tables.render import fmt
from suite.report.tables.tuning import resolution_counts, tuning_table
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
        best = c.loc[score.where(c["n_failed"] == 0).fillna(np.inf).idxmin()]
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


def _throughput(ctx: Context, sec: Section, name: str, cells: pd.DataFrame, tables) -> None:
    bench = bench_throughput(ctx, name, cells)
    if bench is not None:
        threads = "/".join(map(str, sorted(bench["threads"].dropna().astype(int).unique())))
        sec.add(pivot(bench, "throughput", "throughput", f"Throughput from `bench/*.json` (`make bench`: "
                      f"pytest-benchmark median of rounds, {threads} torch thread(s), the runs' implementation where "
                      f"benchmarked): training samples per second (—: not benchmarked); no best marked.",
                      style="plain"), tables)
        return
    _timing(ctx, sec, cells, Score("throughput", "plain", True), "Throughput, training samples per "
            "training-clock second after warm-up (—: no timed step)", tables)


def _timing(ctx: Context, sec: Section, cells: pd.DataFrame, score: Score, what: str, tables) -> None:
    """A table of clock readings: compared only where every run trained alone (unstacked, one
    worker); otherwise shown as measured, with nothing marked, pointing to ``make bench``."""
    runs = ctx.runs[ctx.runs["run_id"].isin(_run_ids(cells))]
    load = load_text(ctx.rows[ctx.rows["run_id"].isin(runs["run_id"])], ctx.study, ctx.env)
    if trained_alone(runs["stack_size"], ctx.study, ctx.env):
        best = "least median" if score.style == "target" else "best mean"
        caption, maximize = f"{what}, {load}; {marks_note(ctx.alpha, _seeds(cells), best)}.", score.maximize
    else:
        caption, maximize = (f"{what}, {load}. Not compared (nothing bold): these runs shared their clock or machine "
                             f"with others, so their timings measure the load as much as the optimizer; compare "
                             f"timings from `make bench`."), None
    sec.add(pivot(cells, score.column, score.column, caption, style=score.style, maximize=maximize, runs=ctx.runs,
                  alpha=ctx.alpha), tables)


def _run_ids(cells: pd.DataFrame) -> list[str]:
    return ",".join(cells["run_ids"]).split(",") if len(cells) else []


def _seeds(cells: pd.DataFrame) -> int:
    return int(cells["n_seeds"].max()) if len(cells) else 0


def headline(ctx: Context, name: str, part: str) -> Score:
    """What a part's tables rank on: steps to target (target part), the task's first final metric (budget part)."""
    if part == "target":
        return Score("steps_to_target", "target", False)
    metric = per_task(ctx.cfg.final_metrics, name)[0]
    return Score(f"final_{metric}", "final", metric.endswith("accuracy"))


def _budget_tables(ctx: Context, sec: Section, name: str, cells: pd.DataFrame, tables, where: str) -> None:
    conf, note = ctx.cfg.statistics.confidence, marks_note(ctx.alpha, _seeds(cells))
    for metric in per_task(ctx.cfg.final_metrics, name):
        sec.add(pivot(cells, f"final_{metric}", f"final_{metric}", f"{where}: final {metric} after the same epochs "
                      f"for every batch size (mean over seeds [{conf:.0%} t-interval]); {note}{_floor_note(metric)}.",
                      maximize=metric.endswith("accuracy"), runs=ctx.runs, alpha=ctx.alpha), tables)


def _floor_note(metric: str) -> str:
    return (f"; at floor = within {ROUNDOFF_MULTIPLE} units of float roundoff of the loss level, where values are "
            f"equal and none is marked") if "excess" in metric else ""


def _target_tables(ctx: Context, sec: Section, name: str, cells: pd.DataFrame, tables, where: str) -> None:
    if name not in ctx.targets:
        return
    conf, note = ctx.cfg.statistics.confidence, marks_note(ctx.alpha, _seeds(cells), "least median")
    target = ctx.targets[name].describe()
    median = (f"median over all seeds, a seed that did not reach it counting as beyond the cap [order-statistic "
              f"{conf:.0%} interval of the median, coverage {_coverage(cells)}]; censored = fewer than half of the "
              f"seeds reached it within the cap, shown with the cap")
    for col, what in (("steps_to_target", "Steps"), ("epochs_to_target", "Epochs"),
                      ("samples_to_target", "Training samples")):
        sec.add(pivot(cells, col, col, f"{where}: {what.lower()} to reach the target ({target}; {median}); fewest is "
                      f"best: {note}, compared on log {what.lower()}.", style="target", maximize=False, runs=ctx.runs,
                      alpha=ctx.alpha), tables)
    _timing(ctx, sec, cells, Score("seconds_to_target", "target", False),
            f"{where}: training-clock seconds to reach the target ({target}; {median})", tables)


def _caps(cells: pd.DataFrame) -> str:
    """The step cap the part's censored seeds ran into: one number under the target protocol; several
    where the cap differs between batch sizes (an epoch budget bound first), which the caption says."""
    caps = sorted(cells["step_cap"].dropna().unique())
    if len(caps) == 1:
        return f", cap {fmt(caps[0], 'count')} steps"
    if caps:
        return (f", caps {fmt(caps[0], 'count')}–{fmt(caps[-1], 'count')} steps (not one step cap: the batch sizes "
                f"were not given the same steps to reach the target)")
    return ""


def _coverage(cells: pd.DataFrame) -> str:
    """The order-statistic intervals' coverage, which seeds fix (fewer than 6 cannot reach 95%)."""
    cover = sorted({round(c, 3) for c in cells["to_target_coverage"].dropna() if c > 0})
    return "/".join(f"{c:.1%}" for c in cover) if cover else "none (one seed)"


def part_section(ctx: Context, task: str, part: str) -> Section:
    """One task's tables and figures under one protocol part; returns its README section."""
    shown = ctx.shown_part(part)
    sec = Section(f"{task}: {part} part" if shown else task)
    cells = of(ctx.cells, task, part)
    runs = of(ctx.runs, task, part)
    trials = of(ctx.trials, task, part)
    name = runs["task"].iloc[0]
    tables, figures = ctx.folder("tables", task, shown), ctx.folder("figures", task, shown)
    where = f"{part.capitalize()} part" + (_caps(cells) if part == "target" else "")
    sec.intro += [_target_intro(ctx, name, runs), ""] if part == "target" else []
    sec.intro += [resolution_line(trials), ""] if len(trials) and "resolution_resolved" in trials else []
    if len(cells) == 0:
        sec.notes.append("no final runs yet (only tuning trials): the optimizer × batch-size tables, the loss curves "
                         "and the throughput figure are omitted.")
    else:
        (_target_tables if part == "target" else _budget_tables)(ctx, sec, name, cells, tables, where)
        sec.add(pivot(cells, "lr", "best_lr", f"{where}: learning rate of each cell's reported configuration (tuned "
                      f"where a study tuned it); no best marked: an lr is a setting, not a score.", style="plain"),
                tables)
        _throughput(ctx, sec, name, cells, tables)
        sec.ranking = ranking(cells, [headline(ctx, name, part)], trials if len(trials) else None, ctx.runs,
                              ctx.alpha, part)
        sec.add(sec.ranking, tables)
        _cell_figures(ctx, sec, name, cells, runs, figures, headline(ctx, name, "budget").column, part)
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


def task_sections(ctx: Context, task: str) -> list[Section]:
    """One section per protocol part the task's runs belong to."""
    parts = set(of(ctx.runs, task)["part"])
    return [part_section(ctx, task, part) for part in ctx.parts if part in parts]


def resolution_line(trials: pd.DataFrame) -> str:
    """How many of the tuned cells the tuner resolved (its export's ``resolution``)."""
    resolved, known = resolution_counts(trials)
    if not known:
        return "Tuning resolution: not exported by the tuner for these cells."
    return (f"Tuning resolution: {resolved} of {known} tuned cells resolved ({resolved / known:.0%}; "
            f"resolved = at least two other trials within the tuner's tolerance of the best; ◦ marks the others).")


def _cell_figures(ctx: Context, sec: Section, name: str, cells: pd.DataFrame, runs: pd.DataFrame, figures,
                  primary: str, part: str) -> None:
    chosen = ctx.rows[ctx.rows["run_id"].isin(",".join(cells["run_ids"]).split(","))]
    curve, seeds = per_task(ctx.cfg.curve_metric, name), int(cells["n_seeds"].max())
    label = curves.label(curve, chosen)
    for x, stem, what in (("epoch", "loss_vs_epoch", "epochs"),
                          ("time_s", "loss_vs_time", "training-clock seconds (eval and warm-up excluded)")):
        notes: list[str] = []
        path = curves.curves(chosen, curve, x, figures / stem, ctx.opts, notes)
        sec.fig(path, f"{label} vs {what}; {curves.spread(seeds, ctx.opts)}; log-log." +
                "".join(f" ({n}.)" for n in notes))
    if ctx.cfg.figures.minibatch:
        picks = representative(cells, primary, int(ctx.cfg.figures.representative))
        traces = RunStore(ctx.root).load_traces(picks["run_id"])
        path = curves.minibatch(ctx.rows, traces, picks, figures / "minibatch_loss", ctx.opts)
        sec.fig(path, f"Every step's mini-batch loss (line: bin mean; band: min–max where steps are binned) beside the "
                f"training loss on the {curves.training_set(chosen)} at the evaluations, for representative cells "
                f"(the best optimizer at batch sizes across the range, first seed), against the updates the "
                f"parameters had (a step's mini-batch loss is computed before its update); log-log.")
        if path is None:
            sec.notes.append("no per-step traces stored (runs written before traces existed): the mini-batch loss "
                             "figure is omitted.")
    plain = scaling_cells(cells)
    if name in ctx.targets and part == "target":
        spread = ("one point per seed that reached the target" if curves.individual(seeds, ctx.opts) else
                  f"whiskers: the median's distribution-free order-statistic interval over seeds (at least "
                  f"{ctx.opts.confidence:.0%} coverage from 6 seeds; an end on an unreached seed runs to the top)")
        sec.fig(scaling.scaling(plain, ctx.runs, figures / "steps_to_target", ctx.opts),
                f"Median steps to target over seeds vs batch size (log-log), {spread}; lines join only exact medians; "
                f"▲ with an arrow: censored (fewer than half of the seeds reached it within the cap; the median "
                f"lies above); ✕ on the top edge: most seeds diverged; red ring: lr at an edge of its search range; "
                f"dashed: perfect scaling from the smallest batch with an exact median.")
    sec.fig(scaling.best_lr(plain, ctx.runs, figures / "best_lr", ctx.opts),
            f"{part.capitalize()} part: reported lr vs batch size (log-log), one panel per optimizer, with the "
            f"linear and square-root scaling rules drawn from the optimizer's own smallest batch whose lr is an "
            f"interior optimum (of a cell that reached the target, under the target protocol); open: a censored or "
            f"failed cell's lr (no optimum of steps to target), not joined; red ring: optimum at an edge of its "
            f"search range; ✕: registry-default lr.")
    path, what = scaling.throughput(runs[runs["run_id"].isin(chosen["run_id"])], figures / "throughput", ctx.opts)
    sec.fig(path, f"Training samples per second (log) per optimizer and batch size; bars: mean over seeds, {what}; "
            f"{load_text(chosen, ctx.study, ctx.env)}.")

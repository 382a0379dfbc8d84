"""``suite-report <results_dir>``: tables and figures from stored rows only (never trains).

Reads ``<results_dir>/runs/*.parquet`` (plus ``environment.json``, ``config.yaml`` and
``bench/*.json`` where present) and writes ``<results_dir>/report/``: ``README.md``,
``tables/<task>/*.{md,tex,csv}`` and ``figures/<task>/*.{png,pdf}``. The report is built in a
hidden sibling directory and swapped in at the end, so a failed report leaves the previous one
intact and no stale file of an earlier report lingers. Nothing under ``runs/`` is written.

Options: ``conf/report.yaml``, then the ``report:`` section of ``<results_dir>/config.yaml``,
then ``key=value`` overrides from the command line.
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from suite.report import figures as F
from suite.report import metrics as M
from suite.report import readme as R
from suite.report import tables as T
from suite.store.runs import RunStore
from suite.types import COLUMNS, ConfigError, StoreError

REPORT_CONF = Path(__file__).resolve().parents[2] / "conf" / "report.yaml"


def load_config(results_dir: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    base = OmegaConf.load(REPORT_CONF)
    layers = [base]
    study_cfg = Path(results_dir) / "config.yaml"
    if study_cfg.is_file():
        section = OmegaConf.load(study_cfg).get("report")
        layers += [section] if section is not None else []
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"report overrides must be key=value (keys of {REPORT_CONF}); got {', '.join(bad)}.")
    try:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.merge(*layers)
    except OmegaConfBaseException as e:
        raise ConfigError(f"report options: {e}".splitlines()[0]) from None
    unknown = sorted(set(cfg) - set(base))
    if unknown:
        raise ConfigError(f"unknown report option(s) {', '.join(unknown)}; valid: {', '.join(base)} ({REPORT_CONF}).")
    return cfg


def targets_of(cfg: DictConfig) -> dict[str, M.Target]:
    out = {}
    for task, t in (cfg.targets or {}).items():
        if t is None:  # targets.<task>=null switches a task's target off
            continue
        try:
            out[task] = M.Target(**OmegaConf.to_container(t))
        except TypeError as e:
            raise ConfigError(f"targets.{task}: {e}; write {{metric: <name>, value: <v>}} or "
                              f"{{metric: <name>, relative: <fraction>}}.") from None
    return out


def _per_task(section: DictConfig, task: str):
    return section[task] if task in section else section["default"]


FORMATS = ("png", "pdf", "svg")


def check_options(cfg: DictConfig) -> None:
    named = [m for v in cfg.final_metrics.values() for m in v] + list(cfg.curve_metric.values()) + [cfg.select]
    bad = sorted({m for m in named if m not in M.METRICS})
    if bad:
        raise ConfigError(f"report: unknown metric(s) {', '.join(bad)}; valid: {', '.join(M.METRICS)}.")
    formats = list(cfg.figures.formats or [])
    if not formats or any(f not in FORMATS for f in formats):
        raise ConfigError(f"figures.formats={formats} is invalid; give one or more of {', '.join(FORMATS)}, "
                          f"e.g. figures.formats=[png,pdf].")


def load_rows(root: Path) -> pd.DataFrame:
    if not root.is_dir():
        raise StoreError(f"results_dir {root} does not exist; pass the directory a study or suite-train wrote "
                         f"(it holds runs/).")
    rows = RunStore(root).load()
    missing = [c for c in (*COLUMNS, "config") if c not in rows]
    if missing:
        raise StoreError(f"runs under {root / 'runs'} lack column(s) {', '.join(missing)}: they were written by an "
                         f"older or foreign version; re-run them or report on a directory of this version's runs.")
    return rows


def write_report(results_dir: str | Path, overrides: Sequence[str] = (), echo: Callable[[str], None] = print) -> Path:
    """Build the whole report; return the path of its README."""
    root = Path(results_dir)
    cfg = load_config(root, overrides)
    check_options(cfg)
    targets = targets_of(cfg)
    rows = M.annotate(load_rows(root))
    runs = M.summarize_runs(rows, targets)
    boot = dict(resamples=cfg.bootstrap.resamples, confidence=cfg.bootstrap.confidence, seed=cfg.bootstrap.seed)
    configs = M.aggregate(M.final_runs(runs), **boot)
    trials = M.trial_stats(runs, cfg.sensitivity_tolerance)
    cells = M.mark_fallback(M.pick_best(configs, f"final_{cfg.select}") if len(configs) else configs, trials)
    opts = F.FigureOptions(formats=tuple(cfg.figures.formats), dpi=cfg.figures.dpi, seed=cfg.bootstrap.seed,
                           ema=cfg.figures.ema)
    out = root / f".report.tmp-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    try:
        out.mkdir(parents=True)
    except OSError as e:
        raise StoreError(f"cannot write the report under {root} ({e.strerror}); copy the results to a directory "
                         f"you can write to and report there.") from None
    try:
        ctx = R.Context(root, out, cfg, targets, rows, runs, cells, trials, opts)
        configs.to_csv(out / "cells.csv", index=False)
        runs.drop(columns=["config_key"]).to_csv(out / "runs.csv", index=False)
        text = R.readme(ctx, [task_section(ctx, task) for task in R.task_order(runs)], cross_task(ctx))
        (out / "README.md").write_text(text)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    final = root / "report"
    old = root / f".report.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    out.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    echo(f"report: {len(runs)} runs ({int(runs['is_trial'].sum())} tuning trials) -> {final / 'README.md'} "
         f"({len(list(final.rglob('*.md'))) - 1} tables, {len(list(final.rglob('*.png')))} figures)")
    return final / "README.md"


def task_section(ctx: "R.Context", task: str) -> R.Section:
    """One task's tables and figures; returns its README section."""
    sec = R.Section(task)
    cells = ctx.cells[ctx.cells["task_label"] == task] if len(ctx.cells) else ctx.cells
    runs = ctx.runs[ctx.runs["task_label"] == task]
    trials = ctx.trials[ctx.trials["task_label"] == task] if len(ctx.trials) else ctx.trials
    name = runs["task"].iloc[0]
    tables, figures = ctx.out / "tables" / R.slug(task), ctx.out / "figures" / R.slug(task)
    target = ctx.targets.get(name)
    sec.intro.append(f"Target: {target.describe()} (first evaluation that meets it)." if target else
                     f"No target for `{name}` in conf/report.yaml: to-target tables and figures are omitted.")
    if len(cells) == 0:
        sec.notes.append("no final runs yet (only tuning trials): the optimizer × batch-size tables, the loss curves "
                         "and the throughput figure are omitted.")
    else:
        primary = _per_task(ctx.cfg.final_metrics, name)
        for metric in primary:
            col = f"final_{metric}"
            sec.add(T.pivot(cells, col, f"final_{metric}", f"Final {metric} (mean over seeds [95% bootstrap CI]); "
                            f"bold = best optimizer per batch size.", maximize=metric.endswith("accuracy")), tables)
        if target:
            for col, what in (("steps_to_target", "Steps"), ("seconds_to_target", "Training-clock seconds")):
                sec.add(T.pivot(cells, col, col, f"{what} to reach the target ({target.describe()}); bold = fewest "
                                f"per batch size.", style="target", maximize=False), tables)
        sec.add(T.pivot(cells, "lr", "best_lr", "Learning rate of each cell's reported configuration (tuned where a "
                        "study tuned it; `(default)`: no tuning trial finished without diverging, so the registry's "
                        "default lr); no best marked: an lr is a setting, not a score.", style="lr"), tables)
        sec.add(T.pivot(cells, "throughput", "throughput", "Throughput, training samples per training-clock second "
                        "after warm-up (—: no timed step); bold = fastest per batch size.", style="plain",
                        maximize=True), tables)
        sec.ranking = T.ranking(cells, f"final_{primary[0]}", primary[0].endswith("accuracy"),
                                trials if len(trials) else None)
        sec.add(sec.ranking, tables)
        chosen = ctx.rows[ctx.rows["run_id"].isin(",".join(cells["run_ids"]).split(","))]
        curve = _per_task(ctx.cfg.curve_metric, name)
        sec.fig(F.curves(chosen, curve, "epoch", figures / "loss_vs_epoch", ctx.opts),
                f"{F.LABELS.get(curve, curve)} vs epochs; band = 95% bootstrap CI over seeds; log-log.")
        sec.fig(F.curves(chosen, curve, "time_s", figures / "loss_vs_time", ctx.opts),
                f"{F.LABELS.get(curve, curve)} vs training-clock seconds (eval and warm-up excluded); log-log.")
        if ctx.cfg.figures.minibatch:
            sec.fig(F.minibatch(chosen, figures / "minibatch_loss", ctx.opts),
                    f"The last mini-batch loss at each evaluation: raw (top), its EMA (middle; weight "
                    f"{ctx.opts.ema:g} per training step across the evaluation points: it smooths where they "
                    f"are dense and lags where the loss falls fast), and the full-training-set loss it estimates "
                    f"(bottom).")
        plain = R.scaling_cells(cells)
        if target:
            sec.fig(F.scaling(plain, figures / "steps_to_target", ctx.opts),
                    "Steps to target vs batch size (log-log; not-reached cells left out); dashed: perfect scaling "
                    "(doubling the batch halves the steps).")
        sec.fig(F.best_lr(plain, figures / "best_lr", ctx.opts), "Reported lr vs batch size (log-log), with the "
                "linear and square-root scaling rules for reference.")
        sec.fig(F.throughput(runs[runs["run_id"].isin(chosen["run_id"])], figures / "throughput", ctx.opts),
                "Training samples per second (log) per optimizer and batch size; bars: mean, whiskers: 95% CI.")
    trial_runs = runs[runs["is_trial"]]
    if len(trial_runs):
        sec.add(T.tuning(trials, ctx.cfg.sensitivity_tolerance), tables)
        sec.fig(F.sensitivity(trial_runs, figures / "lr_sensitivity", ctx.opts),
                "Final validation loss vs lr for every tuning trial (log-log); ✕ on the top edge: diverged; "
                "hollow: pruned (its last evaluation).")
    else:
        sec.notes.append("no tuning trials stored: the lr-sensitivity figure and the tuning table (divergence, "
                         "largest stable lr, sensitivity) are omitted.")
    return sec


def cross_task(ctx: "R.Context") -> R.Section:
    sec = R.Section("Across tasks")
    if len(ctx.cells) == 0:
        return sec
    tables = ctx.out / "tables"
    ranks, primary = {}, {}
    for task in R.task_order(ctx.runs):
        cells = ctx.cells[ctx.cells["task_label"] == task]
        if len(cells):
            primary[task] = f"final_{_per_task(ctx.cfg.final_metrics, cells['task'].iloc[0])[0]}"
            ranks[task] = T.ranking(cells, primary[task], primary[task].endswith("accuracy"), None)
    sec.add(T.summary(ranks, primary), tables)
    solved = ctx.cells[ctx.cells["has_target"] & (ctx.cells["n_reached"] == ctx.cells["n_runs"])]
    if len(solved):
        table, cost = T.profile(ctx.cells[ctx.cells["has_target"]].assign(
            steps_to_target=ctx.cells["steps_to_target"].where(ctx.cells["n_reached"] == ctx.cells["n_runs"])))
        sec.add(table, tables)
        worst = float(cost.div(cost.min(axis=1), axis=0).max().max())
        taus = np.geomspace(1, max(2.0, 1.2 * worst), 200)
        sec.fig(F.profile(M.performance_profile(cost, taus), ctx.out / "figures" / "performance_profile", ctx.opts),
                "Performance profile on steps-to-target: the fraction of problems an optimizer solves within τ × "
                "the best optimizer's steps; higher and further left is better.")
    return sec


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="suite-report", description="Tables and figures from the stored rows of <results_dir> "
        "(never trains); writes <results_dir>/report/.")
    parser.add_argument("results_dir", help="directory holding runs/ (as written by suite-train or suite-study)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="report options (conf/report.yaml), e.g. targets.tiny_mlp.value=0.03 "
                        "figures.formats=[png]")
    args = parser.parse_args(argv)
    return write_report(args.results_dir, args.overrides)

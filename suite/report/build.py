"""``suite-report <results_dir>``: tables and figures from stored rows only (never trains).

Reads ``<results_dir>/runs/*.parquet`` and ``traces/`` (plus ``tuned/*.json``, ``environment.json``,
``config.yaml`` and ``bench/*.json`` where present) and writes ``<results_dir>/report/``:
``README.md``, ``tables/<task>/*.{md,tex,csv}`` and ``figures/<task>/*.{png,pdf}``. The report is
built in a hidden sibling directory and swapped in at the end, so a failed report leaves the
previous one intact and no stale file of an earlier report lingers. Nothing under ``runs/`` is
written.

Options: ``conf/report.yaml``, then the ``report:`` section of ``<results_dir>/config.yaml``, then
the targets the study declared (``study.targets``), then ``key=value`` overrides from the command
line.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from suite.report.beside import Beside
from suite.report.data.baseline import with_baseline
from suite.report.data.metrics import aggregate, annotate, final_runs, pick_best
from suite.report.data.summary_cache import cached_summaries
from suite.report.data.protocol import read_environment, read_study, target_source
from suite.report.data.reported import abandoned
from suite.report.data.trials import trial_stats
from suite.report.data.tuned import link, read_exports
from suite.report.figures.curves import FigureOptions
from suite.report.figures.render import Renderer
from suite.report.readme import Context, per_task, readme, task_order
from suite.report.science.section import science_section
from suite.report.across import cross_task, tuning_noise_section
from suite.report.sections import task_sections
from suite.report.tables.tuning import attach, flag_cells, tuned_lines
from suite.report.tutorials import tutorial_section
from suite.store.runs import RunStore
from suite.types import COLUMNS, METRICS, ConfigError, StoreError, Target

REPORT_CONF = Path(__file__).resolve().parents[2] / "conf" / "report.yaml"
RENAMED = {"bootstrap": "statistics (confidence, alpha): intervals are Student-t now"}
FIXED_SECTIONS = ("statistics", "science", "figures")  # option groups whose keys are fixed (others: per task)


def load_config(results_dir: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    base = OmegaConf.load(REPORT_CONF)
    layers = [base]
    study = read_study(Path(results_dir))
    layers += [study.report] if study.report is not None else []
    layers += [OmegaConf.create({"targets": study.targets})] if study.targets else []
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
        hints = "".join(f" ({k} was replaced by {RENAMED[k]})" for k in unknown if k in RENAMED)
        raise ConfigError(f"unknown report option(s) {', '.join(unknown)}{hints}; valid: {', '.join(base)} "
                          f"({REPORT_CONF}).")
    for section in FIXED_SECTIONS:
        extra = sorted(set(cfg[section]) - set(base[section]))
        if extra:
            raise ConfigError(f"unknown report option(s) {', '.join(f'{section}.{k}' for k in extra)}; valid: "
                              f"{', '.join(f'{section}.{k}' for k in base[section])}.")
    return cfg


def targets_of(cfg: DictConfig) -> dict[str, Target]:
    out = {}
    for task, t in (cfg.targets or {}).items():
        if t is None:  # targets.<task>=null switches a task's target off
            continue
        try:
            out[task] = Target(**OmegaConf.to_container(t))
        except TypeError as e:
            raise ConfigError(f"targets.{task}: {e}; write {{metric: <name>, value: <v>}} or "
                              f"{{metric: <name>, relative: <fraction>}}.") from None
        except ConfigError as e:
            raise ConfigError(f"targets.{task}: {e}") from None
    return out


def check_targets(targets: dict[str, Target], rows: pd.DataFrame) -> None:
    """Each stored task's target against its runs (the report has no task objects): a metric the runs
    store (no accuracy without a classifier, no excess loss without a known optimum), a training
    loss no lower than the optimum they record."""
    stored_tasks = set(rows["task"].unique())
    for task, target in targets.items():
        if task not in stored_tasks:
            continue
        mine = rows.loc[rows["task"] == task, [*METRICS, "optimal_loss"]]
        stored = [m for m in METRICS if mine[m].notna().any() and not m.startswith("test")]
        fix = f"set targets.{task}.metric=<one of those> (and its value), or targets.{task}=null"
        if target.metric not in stored:
            raise ConfigError(f"targets.{task}: {target.describe()} cannot be met: {task}'s runs store no "
                              f"{target.metric} (they store {', '.join(stored)}); {fix}.")
        floor = mine["optimal_loss"].min()
        if target.metric == "train_loss" and target.value is not None and target.value < floor:
            raise ConfigError(f"targets.{task}: {target.describe()} cannot be met: the training loss of {task} is "
                              f"never below its optimum {floor:.6g}; give a value above it, or use excess_loss.")


def damaged_traces(root: Path, notes: list[str], notice: Callable[[str], object]) -> None:
    """Name the traces that cannot be read (their runs are drawn without them), in the README and on stderr."""
    damaged = RunStore(root).damaged_traces()
    if damaged:
        names = ", ".join(f"`traces/{p.name}`" for p in damaged)
        text = (f"damaged trace file(s) {names} (not readable parquet): those runs are drawn without their "
                f"mini-batch losses; the study command that stored them (suite-study or suite-train with the "
                f"same overrides) rebuilds them by training their runs again")
        notes.append(text + ".")
        notice(f"notice: {text.replace('`', '')}; suite-report reads everything else.")


FORMATS = ("png", "pdf", "svg")


def _fraction(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"{name}={value!r} is invalid; give a number strictly between 0 and 1 (e.g. {name}=0.95).")


def check_options(cfg: DictConfig) -> None:
    named = [m for v in cfg.final_metrics.values() for m in v] + list(cfg.curve_metric.values()) + \
        list(cfg.sensitivity_metric.values()) + [cfg.select]
    bad = sorted({m for m in named if m not in METRICS})
    if bad:
        raise ConfigError(f"report: unknown metric(s) {', '.join(bad)}; valid: {', '.join(METRICS)}.")
    formats = cfg.figures.formats
    listed = list(formats) if OmegaConf.is_list(formats) else []
    if not listed or any(f not in FORMATS for f in listed) or len(set(listed)) < len(listed):
        shown = OmegaConf.to_container(formats) if OmegaConf.is_config(formats) else formats
        raise ConfigError(f"figures.formats={shown} is invalid; give a list of one or more of {', '.join(FORMATS)}, "
                          f"each once, e.g. figures.formats=[png,pdf] (default [png]).")
    _fraction("statistics.confidence", cfg.statistics.confidence)
    _fraction("statistics.alpha", cfg.statistics.alpha)
    for name, value, least in (("science.resamples", cfg.science.resamples, 0),
                               ("figures.representative", cfg.figures.representative, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name}={value!r} is invalid; give an integer >= {least}.")


def load_rows(root: Path) -> pd.DataFrame:
    if not root.is_dir():
        raise StoreError(f"results_dir {root} does not exist; pass the directory a study or suite-train wrote "
                         f"(it holds runs/).")
    rows = RunStore(root).load()  # older runs come with suite.types.LATER_COLUMNS filled in
    missing = [c for c in (*COLUMNS, "config") if c not in rows]
    if missing:
        raise StoreError(f"runs under {root / 'runs'} lack column(s) {', '.join(missing)}: they were written by an "
                         f"older or foreign version; re-run them or report on a directory of this version's runs.")
    return rows


def build_context(root: Path, out: Path, cfg: DictConfig, overrides: Sequence[str],
                  env: dict | None = None, renderer: Renderer | None = None) -> Context:
    """Everything the sections read: rows, per-run summaries, cells, trials, flags, the study.
    Runs of abandoned configurations (:mod:`suite.report.data.reported`) are left out of all of it
    but ``stored`` (``runs.csv``)."""
    targets, study, notes = targets_of(cfg), read_study(root), []
    env = read_environment(root) if env is None else env
    as_stored, exports = with_baseline(root, load_rows(root), read_exports(root, notes), notes)  # a comparison's beside it
    rows = annotate(as_stored)
    check_targets(targets, rows)
    stored = cached_summaries(root, as_stored, rows, targets)
    del as_stored
    exports = link(exports, stored)
    stored["abandoned"] = abandoned(stored, exports, study)
    runs = stored[~stored["abandoned"]].reset_index(drop=True)
    rows = rows[rows["run_id"].isin(runs["run_id"])]
    confidence, alpha = cfg.statistics.confidence, cfg.statistics.alpha
    configs = aggregate(final_runs(runs, study.seeds or None), confidence=confidence)
    trials = trial_stats(runs, cfg.sensitivity_tolerance,
                         lambda task: per_task(cfg.sensitivity_metric, task))
    trials = attach(trials, tuned_lines(exports))
    tunings = pick_best(configs, f"final_{cfg.select}") if len(configs) else configs
    tunings = flag_cells(tunings, trials)
    opts = FigureOptions(formats=tuple(cfg.figures.formats), dpi=cfg.figures.dpi, confidence=confidence,
                         renderer=renderer)
    sources = {t: target_source(t, study, list(overrides), env) for t in targets}
    return Context(root, out, cfg, targets, rows, runs, _primary(tunings), _primary(trials), opts, study=study,
                   env=env, sources=sources, configs=configs, notes=notes, alpha=alpha, stored=stored,
                   tunings=tunings)


def _primary(frame: pd.DataFrame) -> pd.DataFrame:
    """The primary tuning's lines (the main tables'; re-tunings feed the tuning-noise section)."""
    return frame[frame["retune"] == 0].reset_index(drop=True) if len(frame) else frame


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _across(ctx: Context) -> tuple:
    """The sections across cells: the batch-size science, the cross-task tables, the tuning noise."""
    return science_section(ctx), cross_task(ctx), tuning_noise_section(ctx)


def _write_contents(ctx: Context, out: Path) -> None:
    # The sections across cells are computed beside the per-task ones (a forked child that writes its
    # own figures, the renderer's workers left to this process).
    across = Beside(_across, dataclasses.replace(ctx, opts=dataclasses.replace(ctx.opts, renderer=None)))
    try:
        ctx.configs.to_csv(out / "cells.csv", index=False)
        ctx.stored.drop(columns=["config_key"]).to_csv(out / "runs.csv", index=False)
        tasks = [sec for task in task_order(ctx.runs) for sec in task_sections(ctx, task)]
        tutorials = tutorial_section(ctx)
        science, cross, noise = across.result()
    except BaseException:
        across.cancel()
        raise
    (out / "README.md").write_text(readme(ctx, [tutorials, *tasks] if tutorials else tasks, cross, science, [noise]))


def write_report(results_dir: str | Path, overrides: Sequence[str] = (), echo: Callable[[str], None] = print,
                 notice: Callable[[str], object] = _stderr, environment: dict | None = None) -> Path:
    """Build the whole report; return the path of its README. ``notice`` gets what the report leaves
    out (damaged traces); ``environment``: the study's, as it reads once the invocation writing this
    report has finished (default: ``environment.json``)."""
    root = Path(results_dir)
    cfg = load_config(root, overrides)
    check_options(cfg)
    out = root / f".report.tmp-{os.getpid()}"
    with Renderer() as renderer:  # its workers start before any rows are read; leaving it waits for every figure
        ctx = build_context(root, out, cfg, overrides, environment, renderer)
        damaged_traces(root, ctx.notes, notice)
        shutil.rmtree(out, ignore_errors=True)
        try:
            out.mkdir(parents=True)
        except OSError as e:
            raise StoreError(f"cannot write the report under {root} ({e.strerror}); copy the results to a directory "
                             f"you can write to and report there.") from None
        try:
            _write_contents(ctx, out)
            renderer.wait()
        except BaseException:
            renderer.close(cancel=True)  # no worker writes into the folder once it is removed
            shutil.rmtree(out, ignore_errors=True)
            raise
    final = root / "report"
    old = root / f".report.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    out.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    runs = ctx.runs
    echo(f"report: {len(runs)} runs ({int(runs['is_trial'].sum())} tuning trials) -> {final / 'README.md'} "
         f"({len(list(final.rglob('*.md'))) - 1} tables, {len(list(final.rglob('*.png')))} figures)")
    return final / "README.md"


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

"""The report's README: the protocol and statistics, environment, fixed hyperparameters, flags,
then the cross-task section, one section per task (tables inline, links to their LaTeX/CSV,
figures with one-line captions), the batch-size science, benchmarks and notes."""
from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from suite.report.benchmarks import load_benchmarks, throughput_figure, throughput_table
from suite.report.data.protocol import PARTS, Study, protocol_lines, time_split_lines
from suite.report.figures.curves import FigureOptions
from suite.report.tables.comparison import optimizer_order
from suite.report.tables.legend import statistics_text
from suite.report.tables.render import Table, fmt, markdown, write
from suite.report.tables.tuning import flag_lines
from suite.tasks import TASKS
from suite.types import ENVIRONMENT_COLUMNS, HPARAM_COLUMNS, StoreError


@dataclass
class Context:
    root: Path
    out: Path
    cfg: DictConfig
    targets: dict
    rows: pd.DataFrame
    runs: pd.DataFrame
    cells: pd.DataFrame
    trials: pd.DataFrame
    opts: FigureOptions
    study: Study = field(default_factory=Study)
    env: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)  # task -> where its target came from
    configs: pd.DataFrame | None = None  # every final configuration, aggregated over seeds
    notes: list[str] = field(default_factory=list)  # report-wide notes (e.g. unreadable tuner exports)
    alpha: float = 0.05
    stored: pd.DataFrame | None = None  # every stored run, abandoned configurations included (runs.csv)
    tunings: pd.DataFrame | None = None  # the cells of every tuning (re-tunings included; ``cells`` is the primary)

    @functools.cached_property
    def parts(self) -> list[str]:
        """The protocol parts the reported runs belong to, in report order (asked for by every table:
        found once)."""
        present = set(self.runs.loc[~self.runs["is_extra"].astype(bool), "part"])
        return [p for p in PARTS if p in present]

    def shown_part(self, part: str) -> str:
        """The part's name where the report has several (titles, folders), else ""."""
        return part if len(self.parts) > 1 else ""

    def folder(self, kind: str, *names: str) -> Path:
        """``<out>/<kind>/<names...>`` (empty names left out), e.g. ``tables/regression/target``."""
        return self.out.joinpath(kind, *(slug(n) for n in names if n))


@dataclass
class Section:
    title: str
    intro: list[str] = field(default_factory=list)
    tables: list[tuple[Table, dict[str, Path]]] = field(default_factory=list)
    figures: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ranking: Table | None = None

    def add(self, table: Table, folder: Path) -> None:
        self.tables.append((table, write(table, folder)))

    def fig(self, path: Path | None, caption: str) -> None:
        if path is not None:
            self.figures.append((path, caption))


def per_task(section, task: str):
    """A per-task report option: the task's entry, else ``default``."""
    return section[task] if task in section else section["default"]


def of(frame: pd.DataFrame, task: str, part: str | None = None) -> pd.DataFrame:
    """The lines of one task (and part; extra runs belong to none) of a report frame."""
    if frame is None or not len(frame):
        return frame
    return frame[(frame["task_label"] == task) & (frame["part"] == part if part else frame["part"] != "")]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def task_order(runs: pd.DataFrame) -> list[str]:
    """Task labels in registry order; labels holding only extra (``purpose``) runs get no section."""
    known = {t: i for i, t in enumerate(TASKS)}
    labels = runs.loc[~runs["is_extra"].astype(bool), ["task", "task_label"]].drop_duplicates()
    labels = labels.assign(k=labels["task"].map(known).fillna(len(known))).sort_values(["k", "task_label"])
    return list(labels["task_label"])


def scaling_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """One cell per (optimizer, batch size) for the scaling figures (and re-tuning, where cells carry
    one line per re-tuning): default sampling and reduction; a plain batch wins over the same batch
    built by accumulation."""
    plain = cells[(cells["sampling"] == "shuffle") & (cells["accumulation_reduction"] == "mean")]
    keys = ["optimizer", "batch_size", *(["retune"] if "retune" in cells else [])]
    return plain.sort_values("accumulation_steps").groupby(keys, dropna=False).head(1)


def science_cells(ctx: Context, task: str) -> pd.DataFrame:
    """The cells the batch-size science of a task reads, every tuning's (re-tunings feed the fits'
    intervals): its target part's (steps to a target are defined there only), else its budget
    part's (the lr's scaling with the batch)."""
    cells = of(ctx.tunings if ctx.tunings is not None else ctx.cells, task)
    if cells is None or not len(cells):
        return cells
    return cells[cells["part"] == ("target" if (cells["part"] == "target").any() else "budget")]


def _values(series: pd.Series) -> str:
    vals = sorted({json.dumps(v, sort_keys=True, default=str) for v in series}, key=str)
    return ", ".join(v.strip('"') for v in vals)


def _kv_table(pairs: list[tuple[str, str]], head=("", "")) -> list[str]:
    lines = [f"| {head[0]} | {head[1]} |", "|:---|:---|"]
    return lines + [f"| {k} | {str(v).replace('|', '/')} |" for k, v in pairs]


def environment(ctx: Context) -> list[str]:
    pairs = [(c.replace("_", " "), _values(ctx.rows[c].drop_duplicates())) for c in ENVIRONMENT_COLUMNS]
    for key, value in ctx.env.items():
        if key == "wall_seconds" and isinstance(value, (int, float)):
            pairs.append(("study wall time", f"{value / 60:.1f} min ({value:,.0f} s){_invocations(ctx.env)}"))
        elif key == "time_split" and isinstance(value, dict):
            pairs += time_split_lines(value)
        elif key not in (*ENVIRONMENT_COLUMNS, "invocations"):
            pairs.append((key.replace("_", " "), value))
    return ["## Environment", "", *_kv_table(pairs, ("machine / software", "value")), ""]


def _invocations(env: dict) -> str:
    """How the wall time was assembled when the study took several invocations."""
    runs = [i for i in env.get("invocations") or [] if isinstance(i, dict)]
    cut = sum(i.get("seconds") is None for i in runs)
    if len(runs) < 2 and not cut:
        return ""
    commits = sorted({str(i["git_commit"]) for i in runs if i.get("git_commit")})
    return (f", over {len(runs)} invocations" + (f" ({cut} interrupted, not counted)" if cut else "")
            + (f" at commits {', '.join(commits)}" if len(commits) > 1 else ""))


def hyperparameters(ctx: Context) -> list[str]:
    """What every table holds fixed: optimizer hyperparameters, budgets, evaluation, settings."""
    ordinary = ctx.runs[~ctx.runs["is_extra"].astype(bool)]
    ordinary = ordinary if len(ordinary) else ctx.runs  # a store of extra runs only describes those
    runs = ordinary[~ordinary["is_trial"]] if (~ordinary["is_trial"]).any() else ordinary
    configs = runs.drop_duplicates("config_key")
    parsed = [json.loads(k) for k in configs["config_key"]]
    lines = ["## Fixed hyperparameters", "", "Optimizer hyperparameters other than the learning rate "
             "(the lr is tuned or chosen per cell, see each task's `best_lr` table):", ""]
    opts = pd.DataFrame([{"optimizer": c["optimizer"], "impl": c["impl"], **c["hparams"]} for c in parsed])
    keys = ["impl", *HPARAM_COLUMNS, *sorted(set(opts) - {"optimizer", "impl", *HPARAM_COLUMNS})]
    rows = []
    for name in optimizer_order(opts["optimizer"]):
        sub = opts[opts["optimizer"] == name]
        rows.append((name, "; ".join(f"{k}={_values(sub[k])}" for k in keys if k in sub and sub[k].notna().any())))
    lines += _kv_table(rows, ("optimizer", "fixed"))
    lines += ["", "Run settings per task:", ""]
    settings = pd.DataFrame([{
        "task": label, "epochs": c["epochs"], "max steps": c["max_steps"], "max seconds": c["max_seconds"],
        "evaluation": _eval(c["eval"]), "warm-up steps": c["warmup_steps"], "sampling": c["sampling"],
        "accumulation": c["accumulation_reduction"], "dtype": c["dtype"], "device": c["device"],
        "divergence factor": c["divergence_factor"],
        "task options": ", ".join(f"{k}={v}" for k, v in c["task_options"].items() if k != "name"),
    } for label, c in zip(configs["task_label"] + configs["part"].map(_part_label(ctx)), parsed)])
    for label in [t + _part_label(ctx)(p) for t in task_order(runs) for p in ctx.parts or [""]]:
        sub = settings[settings["task"] == label].drop(columns="task")
        lines += [f"**{label}**: " + "; ".join(f"{k} {_values(sub[k])}" for k in sub), ""] if len(sub) else []
    if (ctx.root / "config.yaml").is_file():
        lines += ["The study's resolved configuration: [`config.yaml`](../config.yaml).", ""]
        if not ctx.study.tune:
            lines += ["**Learning rates were not tuned** (`study.tune=false`): every cell ran at the optimizer "
                      "registry's default lr (`suite/optim/registry.py`).", ""]
    return lines


def _part_label(ctx: Context):
    """`` (target part)`` after a task's name where the report has several parts."""
    return lambda part: f" ({part} part)" if ctx.shown_part(part) else ""


def _eval(ev: dict) -> str:
    if ev.get("every_steps"):
        return f"every {ev['every_steps']} steps"
    if ev.get("every_epochs"):
        return f"every {ev['every_epochs']} epochs"
    return f"{ev['points']} {ev['schedule']}-spaced points"


def section(sec: Section, out: Path, formats: tuple[str, ...], level: int = 2) -> list[str]:
    """A section's Markdown; each figure shown in its first format, linked in the others written."""
    lines = [f"{'#' * level} {sec.title}", "", *[f"{line}" for line in sec.intro], ""]
    for table, paths in sec.tables:
        links = ", ".join(f"[{ext}]({paths[ext].relative_to(out)})" for ext in ("tex", "csv"))
        lines += [f"{'#' * (level + 1)} {table.name.replace('_', ' ')}", "", f"{table.caption} ({links})", "",
                  markdown(table)]
    for path, caption in sec.figures:
        rel = path.relative_to(out)
        links = ", ".join(f"[{ext}]({rel.with_suffix('.' + ext)})" for ext in formats if f".{ext}" != rel.suffix)
        lines += [f"![{caption}]({rel})", "", f"*{caption}*" + (f" ({links})" if links else ""), ""]
    lines += [f"- note: {n}" for n in sec.notes] + ([""] if sec.notes else [])
    return lines


def _bench_cell(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return fmt(v) if isinstance(v, float) else str(v)


def benchmarks(ctx: Context) -> list[str]:
    """pytest-benchmark JSON under ``bench/`` (``make bench``), converted by :mod:`suite.report.benchmarks`.
    Unreadable benchmark files become a note: they must not cost the report of the training runs."""
    bench = ctx.root / "bench"
    files = sorted(bench.glob("*.json"))
    if not files:
        return []
    sec = Section("Benchmarks")
    try:
        frame = load_benchmarks(bench)
        table = throughput_table(frame)
    except StoreError as e:
        sec.notes.append(f"the benchmark results under `bench/` are not shown: {e}")
        return section(sec, ctx.out, ctx.opts.formats)
    table = table[[c for c in table.columns if not table[c].isna().all()]]
    text = table.drop(columns="kind").apply(lambda col: col.map(_bench_cell))
    text.index = pd.Index(table["kind"], name="kind")
    sec.add(Table("benchmarks", f"pytest-benchmark step timings from {len(files)} file(s) under bench/: median "
                  f"ms per step, samples/s, peak memory, optimizer state bytes per parameter, speedup over the "
                  f"for-loop implementation; no best marked.", text,
                  pd.DataFrame(False, index=text.index, columns=text.columns), table), ctx.out / "tables")
    stem = ctx.out / "figures" / "benchmark_throughput"
    try:
        for ext in ctx.opts.formats:
            throughput_figure(frame, stem.with_suffix(f".{ext}"))
        sec.fig(stem.with_suffix(f".{ctx.opts.formats[0]}"), "Training-step throughput from the benchmarks "
                "(pytest-benchmark, median of rounds), log-log.")
    except StoreError as e:
        sec.notes.append(str(e))
    return section(sec, ctx.out, ctx.opts.formats)


SCIENCE_INTRO = ("Where perfect batch scaling ends and why, how the best learning rate moves with the batch, and "
                 "checks against theory where it is exact; every line states a fit with its interval.")


def readme(ctx: Context, tasks: list[Section], cross: list[Section], science: list[Section],
           after: list[Section] = ()) -> str:
    """The README: the report-wide parts, then the sections ``cross`` (before the tasks), ``tasks``,
    ``after`` (the tuning noise) and the batch-size science."""
    runs, stored = ctx.runs, ctx.stored if ctx.stored is not None else ctx.runs
    n_trials, n_extra = int(runs["is_trial"].sum()), int(runs["is_extra"].astype(bool).sum())
    studies = runs["study"].nunique() if "study" in runs else 0
    reported = sum(len(ids.split(",")) for ids in ctx.cells["run_ids"]) if len(ctx.cells) else 0
    extra = f", {n_extra} extra runs with a purpose (theory, lr scaling)" if n_extra else ""
    left = len(stored) - len(runs)
    left_out = (f" {left} runs of configurations the study abandoned (an earlier lr or search range than the one "
                f"its tuner export names) stay in storage but out of every table, figure and `cells.csv`; `runs.csv` "
                f"flags them `abandoned`.") if left else ""
    lines = [
        f"# Report: {ctx.root.resolve().name}", "",
        f"Generated by `suite-report` from the {len(stored)} runs stored under `runs/` ({n_trials} of them tuning "
        f"trials{f' of {studies} studies' if studies else ''}{extra}); nothing was trained.{left_out} The tables "
        f"report {len(ctx.cells)} cells through {reported} runs of their reported configurations (a trial whose "
        f"configuration is a final one counts as that run). Rows are batch sizes (`64×16` = micro-batch 64 × 16 "
        f"accumulation steps; GD = full batch, SGD = batch 1). Every table is also written as LaTeX (booktabs, "
        f"for `\\input`) and CSV.", "",
        *protocol_lines(ctx.study, ctx.targets, ctx.sources, set(runs["task"]), ctx.env),
        statistics_text(ctx.cfg.statistics.confidence, ctx.alpha, ctx.opts.individual_below), "",
        *environment(ctx), *hyperparameters(ctx), *flag_lines(ctx.trials),
        "All numbers in one place: [`cells.csv`](cells.csv) (one line per cell and tuning — `part`, `retune` — "
        "aggregated over seeds: final/best losses and accuracies with t-intervals, steps/epochs/samples/seconds to "
        "target as medians with their order-statistic intervals, failed, collapsed and censored counts, "
        "throughput) and [`runs.csv`](runs.csv) (one line per stored run, with its `part`, `collapsed`, "
        "`abandoned`, its steps to target, `to_target_bracket` = the width in steps of the interval it was located "
        "in, and why an unreached run is censored).", "",
        *[f"- note: {n}" for n in ctx.notes], *([""] if ctx.notes else []),
    ]
    for sec in cross:
        lines += section(sec, ctx.out, ctx.opts.formats) if sec.tables else []
    for sec in tasks:
        lines += section(sec, ctx.out, ctx.opts.formats)
    for sec in after:
        lines += section(sec, ctx.out, ctx.opts.formats) if sec.tables else []
    if science:
        lines += ["## Batch-size science", "", SCIENCE_INTRO, ""]
        for sec in science:
            lines += section(sec, ctx.out, ctx.opts.formats, level=3)
    lines += benchmarks(ctx)
    return "\n".join(lines).rstrip() + "\n"

"""The report's README: the protocol and statistics, environment, fixed hyperparameters, flags,
then the cross-task section, one section per task (tables inline, links to their LaTeX/CSV,
figures with one-line captions), the batch-size science, benchmarks and notes."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from suite.report.benchmarks import load_benchmarks, throughput_figure, throughput_table
from suite.report.data.protocol import Study, protocol_lines
from suite.report.figures.curves import FigureOptions
from suite.report.tables.comparison import optimizer_order
from suite.report.tables.render import Table, fmt, markdown, write
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
    } for label, c in zip(configs["task_label"], parsed)])
    for label in task_order(runs):
        sub = settings[settings["task"] == label].drop(columns="task")
        lines += [f"**{label}**: " + "; ".join(f"{k} {_values(sub[k])}" for k in sub), ""]
    if (ctx.root / "config.yaml").is_file():
        lines += ["The study's resolved configuration: [`config.yaml`](../config.yaml).", ""]
        if not ctx.study.tune:
            lines += ["**Learning rates were not tuned** (`study.tune=false`): every cell ran at the optimizer "
                      "registry's default lr (`suite/optim/registry.py`).", ""]
    return lines


def _eval(ev: dict) -> str:
    if ev.get("every_steps"):
        return f"every {ev['every_steps']} steps"
    if ev.get("every_epochs"):
        return f"every {ev['every_epochs']} epochs"
    return f"{ev['points']} {ev['schedule']}-spaced points"


def section(sec: Section, out: Path, level: int = 2) -> list[str]:
    lines = [f"{'#' * level} {sec.title}", "", *[f"{line}" for line in sec.intro], ""]
    for table, paths in sec.tables:
        links = ", ".join(f"[{ext}]({paths[ext].relative_to(out)})" for ext in ("tex", "csv"))
        lines += [f"{'#' * (level + 1)} {table.name.replace('_', ' ')}", "", f"{table.caption} ({links})", "",
                  markdown(table)]
    for path, caption in sec.figures:
        rel = path.relative_to(out)
        lines += [f"![{caption}]({rel})", "", f"*{caption}* ([pdf]({rel.with_suffix('.pdf')}))", ""]
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
        return section(sec, ctx.out)
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
    return section(sec, ctx.out)


SCIENCE_INTRO = ("Where perfect batch scaling ends and why, how the best learning rate moves with the batch, and "
                 "checks against theory where it is exact; every line states a fit with its interval.")


def statistics_text(ctx: Context) -> str:
    conf = ctx.cfg.statistics.confidence
    return (f"A cell shows the mean over seeds and, with several seeds, its {conf:.0%} Student-t interval [lo, hi] "
            f"(truncated to the values the metric can take: [0, 1] for an accuracy, ≥ 0 for losses, steps and "
            f"seconds). "
            f"**Bold** marks the best mean of a row among cells whose seeds all finished; a cell that a paired "
            f"t-test over seeds (same seed = same data order and initialization for every optimizer) against that "
            f"best, Holm-corrected across the row at α = {ctx.alpha:g}, cannot separate from it is marked tied "
            f"(**≈ bold**); the CSVs carry `best` and `tied_best`. Figures draw every seed where there are fewer "
            f"than {ctx.opts.individual_below}, else the mean with its t-interval band.")


def flags(ctx: Context) -> list[str]:
    """Cells whose lr is not an interior optimum of its search range, or not tuned at all."""
    t = ctx.trials
    if not len(t):
        return []
    edge, fallback = t[t["edge"].astype(bool)], t[t["lr_fallback"].astype(bool)]
    lines = [f"- **edge of range**: {r['task_label']} / {r['optimizer']} / batch {r['batch_label']}: {r['edge']}"
             for _, r in edge.iterrows()]
    lines += [f"- **registry-default lr**: {r['task_label']} / {r['optimizer']} / batch {r['batch_label']}: "
              f"{r['lr_source']}" for _, r in fallback.iterrows()]
    head = "## Flags" if lines else None
    return [head, "", "Cells compared at an lr that is not an interior tuned optimum (marked † and ‡ in the "
            "tables):", "", *lines, ""] if head else []


def readme(ctx: Context, tasks: list[Section], cross: Section, science: list[Section]) -> str:
    runs = ctx.runs
    n_trials, n_extra = int(runs["is_trial"].sum()), int(runs["is_extra"].astype(bool).sum())
    studies = runs["study"].nunique() if "study" in runs else 0
    reported = sum(len(ids.split(",")) for ids in ctx.cells["run_ids"]) if len(ctx.cells) else 0
    extra = f", {n_extra} extra runs with a purpose (theory, lr scaling)" if n_extra else ""
    lines = [
        f"# Report: {ctx.root.resolve().name}", "",
        f"Generated by `suite-report` from the {len(runs)} runs stored under `runs/` ({n_trials} of them tuning "
        f"trials{f' of {studies} studies' if studies else ''}{extra}); nothing was trained. The tables report "
        f"{len(ctx.cells)} cells through {reported} runs of their chosen configurations (a trial whose "
        f"configuration is a final one counts as that run). Rows are batch sizes (`64×16` = micro-batch 64 × 16 "
        f"accumulation steps; GD = full batch, SGD = batch 1). Every table is also written as LaTeX (booktabs, "
        f"for `\\input`) and CSV.", "",
        *protocol_lines(ctx.study, ctx.targets, ctx.sources, set(runs["task"])),
        statistics_text(ctx), "",
        *environment(ctx), *hyperparameters(ctx), *flags(ctx),
        "All numbers in one place: [`cells.csv`](cells.csv) (every cell's configurations, aggregated over seeds, "
        "with t-intervals: final/best losses and accuracies, steps/epochs/samples/seconds to target, throughput) "
        "and [`runs.csv`](runs.csv) (one line per run, with its steps to target, `to_target_bracket` = the width "
        "in steps of the interval it was located in, and why an unreached run is censored).", "",
        *[f"- note: {n}" for n in ctx.notes], *([""] if ctx.notes else []),
    ]
    if cross.tables:
        lines += section(cross, ctx.out)
    for sec in tasks:
        lines += section(sec, ctx.out)
    if science:
        lines += ["## Batch-size science", "", SCIENCE_INTRO, ""]
        for sec in science:
            lines += section(sec, ctx.out, level=3)
    lines += benchmarks(ctx)
    return "\n".join(lines).rstrip() + "\n"

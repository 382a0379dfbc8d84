"""Study presets -> cells -> (tune each cell, final runs of its best config over seeds) -> report.

Resumable by construction: every final run is skipped when its ``run_id`` is stored, and each
cell's tuning study lives in the Optuna storage and continues to its trial count. A kill loses
at most the runs in flight. Cells run in ``study.workers`` processes, each with its share of the
cores as torch threads, so N workers do not oversubscribe the machine.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from suite.optimizers import OPTIMIZERS
from suite.records import RunStore, environment, make_frame
from suite.run import prepare, resolve_device, set_threads
from suite.tasks import TASKS, build_task
from suite.train import train_many
from suite.types import ConfigError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@dataclass(frozen=True)
class Cell:
    task: str
    optimizer: str
    batch_size: int | str  # an int, or "full"
    accumulation_steps: int = 1

    @property
    def label(self) -> str:
        acc = self.accumulation_steps
        batch = self.batch_size if acc == 1 else f"{self.batch_size // acc}x{acc}"
        return f"{self.task}/{self.optimizer}/b{batch}"


def _names(kind: str, given: list[str], registry: dict) -> list[str]:
    unknown = [g for g in given if g not in registry]
    if unknown or not given:
        raise ConfigError(
            f"study.{kind}: {', '.join(map(str, unknown)) or 'empty list'} "
            f"{'is not a valid name' if unknown else 'needs at least one entry'}; "
            f"valid: {', '.join(registry)}. Example: study.{kind}=[{next(iter(registry))}]"
        )
    return list(given)


def _batch_sizes(given: list[Any]) -> list[int | str]:
    bad = [b for b in given if b != "full" and (isinstance(b, bool) or not isinstance(b, int) or b < 1)]
    if bad or not given:
        raise ConfigError(f"study.batch_sizes: {bad or 'empty list'} invalid; use integers >= 1 or 'full', "
                          f"e.g. study.batch_sizes=[1,32,full].")
    return list(given)


def _accumulation(given: list[Any]) -> list[tuple[int, int]]:
    out = []
    for entry in given:
        try:
            micro, k = (int(p) for p in str(entry).lower().split("x"))
            assert micro >= 1 and k >= 2
        except (ValueError, AssertionError):
            raise ConfigError(f"study.accumulation entry {entry!r} is invalid; write MxK with micro-batch M >= 1 "
                              f"and K >= 2 accumulation steps, e.g. study.accumulation=[64x16].") from None
        out.append((micro, k))
    return out


def _task_section(study: DictConfig, key: str, task: str) -> dict[str, Any]:
    """``study.<key>.<task>`` as a dict ({} where absent)."""
    section = study.get(key) or {}
    return OmegaConf.to_container(section[task], resolve=True) if task in section else {}


def task_options(study: DictConfig, task: str) -> dict[str, Any]:
    return _task_section(study, "task_options", task)


def expand(study: DictConfig, sizes: dict[str, int]) -> list[Cell]:
    """All cells of the study; batch sizes above a task's n are left out (``full`` covers them)."""
    cells = []
    for task in study.tasks:
        n = sizes[task]
        batches = [b for b in _batch_sizes(list(study.batch_sizes)) if b == "full" or b <= n]
        accum = [(m * k, k) for m, k in _accumulation(list(study.accumulation)) if m * k <= n]
        for opt in study.optimizers:
            cells += [Cell(task, opt, b) for b in batches] + [Cell(task, opt, b, k) for b, k in accum]
    return cells


def validate(study: DictConfig) -> dict[str, int]:
    """Check every axis against the registries; return each task's training-set size."""
    _names("tasks", list(study.tasks), TASKS)
    _names("optimizers", list(study.optimizers), OPTIMIZERS)
    _batch_sizes(list(study.batch_sizes))
    _accumulation(list(study.accumulation))
    seeds = list(study.seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"study.seeds={seeds} is invalid; give integers >= 0, e.g. study.seeds=[0,1,2].")
    for key in ("workers", "n_trials", "tune_batch"):
        if not isinstance(study[key], int) or study[key] < 1:
            raise ConfigError(f"study.{key}={study[key]!r} must be an integer >= 1.")
    from suite.launch import LAUNCHERS

    if study.launcher not in LAUNCHERS:
        raise ConfigError(f"study.launcher={study.launcher!r} is invalid; valid: {', '.join(LAUNCHERS)}.")
    missing = [t for t in study.tasks if t not in study.budgets]
    if missing:
        raise ConfigError(f"study.budgets has no entry for {', '.join(missing)}; add "
                          f"study.budgets.<task>={{epochs: E, max_steps: S}}.")
    return {t: build_task({"name": t, **task_options(study, t)}).n_train for t in study.tasks}


def _compose_groups(task: str, optimizer: str) -> DictConfig:
    """The task and optimizer groups as Hydra composes them from conf/ (same files as suite-train)."""
    overrides = [f"task={task}", f"optimizer={optimizer}"]
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def cell_config(cfg: DictConfig, cell: Cell) -> DictConfig:
    """The run config of one cell: the study's top-level settings + the cell's axes and budget."""
    study = cfg.study
    groups = _compose_groups(cell.task, cell.optimizer)
    base = OmegaConf.to_container(cfg, resolve=True)
    base.pop("study")
    base.pop("report", None)  # report options never reach a run
    base.update(
        task={**OmegaConf.to_container(groups.task), **task_options(study, cell.task)},
        optimizer=OmegaConf.to_container(groups.optimizer), batch_size=cell.batch_size,
        accumulation_steps=cell.accumulation_steps,
        budget={**base["budget"], **OmegaConf.to_container(study.budgets[cell.task])},
        eval={**base["eval"], "points": study.eval_points, **_task_section(study, "eval", cell.task)},
        threads=(study.get("threads") or {}).get(cell.task, base["threads"]),
    )
    base["tune"] = {**base.get("tune", {}), "n_trials": study.n_trials, "batch": study.tune_batch}
    return OmegaConf.create(base)


def final_runs(cfg: DictConfig, seeds: list[int], lr: float | None, hparams: dict[str, Any]) -> int:
    """Train the cell's chosen configuration once per seed (stacked), skipping stored runs."""
    store = RunStore(cfg.results_dir)
    todo = []
    for seed in seeds:
        run_cfg = OmegaConf.merge(cfg, {"seed": seed, "lr": lr, "optimizer": hparams})
        prepared = prepare(run_cfg)
        if not store.has(prepared.run_id):
            todo.append(prepared)
    if todo:
        results = train_many(todo[0].task, [p.spec for p in todo], progress=bool(cfg.progress))
        for p, result in zip(todo, results):
            store.write(make_frame(p.spec, p.task, p.config, result))
    return len(todo)


def run_cell(cfg: DictConfig, seeds: list[int], tune: bool) -> dict[str, Any]:
    """Tune one cell (or take the registry default), then its final runs. Safe to repeat:
    tuning continues its Optuna study to ``tune.n_trials`` and stored final runs are skipped."""
    started = time.perf_counter()
    set_threads(cfg.get("threads"))
    lr, hparams, source = None, {}, "registry default (study.tune=false)"
    if tune:
        from suite.tune import tune_cell  # the tuner is only needed when tuning

        best = tune_cell(cfg, echo=lambda *_: None)
        if best["lr"] is None:
            source = "registry default (every tuning trial diverged)"
        else:
            lr, hparams, source = best["lr"], best.get("hparams", {}), "tuned"
    trained = final_runs(cfg, seeds, lr, hparams)
    return {"lr": lr, "lr_source": source, "trained": trained, "seconds": time.perf_counter() - started}


def write_context(cfg: DictConfig) -> None:
    """The resolved study config and the environment, beside the results."""
    root = Path(cfg.results_dir)
    root.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, root / "config.yaml", resolve=True)
    import optuna
    import pandas

    env = {**environment(resolve_device(str(cfg.device))), "cpu_count": os.cpu_count(), "optuna_version": optuna.__version__,
           "pandas_version": pandas.__version__, "workers": cfg.study.workers}
    (root / "environment.json").write_text(json.dumps(env, indent=2) + "\n")


def run_study(cfg: DictConfig, echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every cell of ``cfg.study`` (resumable); return one summary dict per cell."""
    from suite.launch import launch

    study = cfg.study
    sizes = validate(study)
    RunStore(cfg.results_dir).ensure_writable()
    write_context(cfg)
    cells = expand(study, sizes)
    echo(f"study {study.name}: {len(cells)} cells x {len(study.seeds)} seed(s)"
         f"{f', {study.n_trials} tuning trials per cell' if study.tune else ', registry-default lrs'}, "
         f"launcher {study.launcher} with {study.workers} worker(s) -> {cfg.results_dir}")
    return launch([(cell.label, cell_config(cfg, cell)) for cell in cells], cfg)


def study_and_report(cfg: DictConfig, echo: Callable[[str], None] = print) -> None:
    """``suite-study``: run the study, then write its report (suite-report's tables and figures)."""
    from suite.report import write_report

    started = time.perf_counter()
    summaries = run_study(cfg, echo)
    trained = sum(s["trained"] for s in summaries)
    fallback = [s["cell"] for s in summaries if s["lr_source"].startswith("registry") and cfg.study.tune]
    if fallback:
        echo(f"{len(fallback)} cell(s) use the registry lr because every tuning trial diverged: {', '.join(fallback)}")
    report = write_report(cfg.results_dir, echo=lambda *_: None)
    echo(f"study {cfg.study.name} done in {time.perf_counter() - started:.0f}s: {len(summaries)} cells, "
         f"{trained} final run(s) trained now (the rest were stored). Results: {cfg.results_dir}  "
         f"Report: {report}")

"""``suite-study``: a preset's cells (``presets``) run as jobs (``cell``) by a launcher
(``launchers``), then the report. Resumable by construction: every final run is skipped when its
``run_id`` is stored, and each cell's tuning study lives in the Optuna storage and continues to
its trial count. A kill loses at most the runs in flight, and the rerun redoes them with the same
parameters, so it ends with the uninterrupted study's trials, tuned lrs, run ids and tables.
Several ``suite-study`` processes on one results directory cooperate (each cell is done once;
see ``suite.study.launchers``); the report is written under a lock, one process at a time.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import optuna
import pandas
from omegaconf import DictConfig, OmegaConf

from suite.report.build import write_report
from suite.run.validate import RUN_KEYS, check_keys, results_dir
from suite.store.locks import HolderLock, alive, io_error, worker_id
from suite.store.runs import RunStore
from suite.study.cell import FALLBACK, Job, notice
from suite.study.extras import run_extras
from suite.study.launchers import launch
from suite.study.presets import Cell, cell_config, expand, validate
from suite.train.device import resolve_device
from suite.train.rows import environment


def _write_atomically(path: Path, text: str) -> None:
    """Readers (a report, another study on this directory) see the old file or the new one whole."""
    tmp = path.with_name(f".{path.name}.{worker_id()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise io_error(e, f"writing {path}") from None


def write_context(cfg: DictConfig) -> None:
    """The resolved study config and the environment, beside the results."""
    root = Path(cfg.results_dir)
    root.mkdir(parents=True, exist_ok=True)
    _write_atomically(root / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    env = {**environment(resolve_device(str(cfg.device))), "cpu_count": os.cpu_count(),
           "optuna_version": optuna.__version__, "pandas_version": pandas.__version__, "workers": cfg.study.workers}
    _write_atomically(root / "environment.json", json.dumps(env, indent=2) + "\n")


def run_study(cfg: DictConfig, echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every cell of ``cfg.study`` (resumable); return one summary dict per cell."""
    study = cfg.study
    check_keys(cfg, (*RUN_KEYS, "study", "report"), "")
    results_dir(cfg.results_dir)
    sizes = validate(study)
    RunStore(cfg.results_dir).ensure_writable()
    write_context(cfg)
    cells = expand(study, sizes)
    echo(f"study {study.name} ({study.get('protocol', 'budget')} protocol): {len(cells)} cells, "
         f"{len(study.seeds)} seed(s)"
         f"{f', {study.n_trials} tuning trials per cell' if study.tune else ', untuned lrs'}, "
         f"launcher {study.launcher} with {study.workers} worker(s) -> {cfg.results_dir}")
    summaries = launch([job_of(cfg, cell) for cell in cells], cfg)
    extra = run_extras(cfg)
    if extra:
        echo(f"{extra} extra run(s) for the batch-size science (theory, lr scaling) trained now.")
    return summaries


def job_of(cfg: DictConfig, cell: Cell) -> Job:
    """A cell's job: its run config, its final seeds, and what it is tuned as (an accumulation cell
    as the batch it emulates) or the fixed lr of an untuned study (``study.lr``, else the registry's)."""
    tuning = OmegaConf.to_yaml(cell_config(cfg, cell.emulated)) if cfg.study.tune else None
    fixed = cfg.study.get("lr") if not cfg.study.tune else None
    return Job(cell.label, OmegaConf.to_yaml(cell_config(cfg, cell)), cell.seeds, tuning, fixed)


def record_wall_time(results_dir: str | Path, seconds: float) -> None:
    """The study command's wall time in ``environment.json`` (the report states it)."""
    path = Path(results_dir) / "environment.json"
    env = json.loads(path.read_text()) if path.is_file() else {}
    env["wall_seconds"] = round(seconds, 1)
    _write_atomically(path, json.dumps(env, indent=2) + "\n")


def _clean_stale_reports(root: Path) -> None:
    """Remove the half-built report folders of dead local processes (a kill mid-report)."""
    host = worker_id().rpartition(":")[0]
    for folder in [*root.glob(".report.tmp-*"), *root.glob(".report.old-*")]:
        pid = folder.name.rpartition("-")[2]
        if pid.isdigit() and not alive(f"{host}:{pid}"):
            shutil.rmtree(folder, ignore_errors=True)


def locked_report(root: str | Path) -> Path:
    """The study's report, written by one process at a time (studies sharing a directory each end here)."""
    root = Path(root)
    lock = HolderLock(root / "locks" / "report.lock")
    lock.acquire(on_wait=lambda holder: notice(f"waiting for {holder}, which is writing the report of {root}."))
    try:
        _clean_stale_reports(root)
        return write_report(root, echo=lambda *_: None)
    finally:
        lock.release()


def study_and_report(cfg: DictConfig, echo: Callable[[str], None] = print) -> None:
    """``suite-study``: run the study, then write its report (suite-report's tables and figures)."""
    started = time.perf_counter()
    summaries = run_study(cfg, echo)
    trained = sum(s["trained"] for s in summaries)
    fallback = [s["cell"] for s in summaries if s["lr_source"] == FALLBACK]
    if fallback:
        echo(f"{len(fallback)} cell(s) use the registry lr because no tuning trial finished without diverging "
             f"(the report marks them): {', '.join(fallback)}")
    record_wall_time(cfg.results_dir, time.perf_counter() - started)
    report = locked_report(cfg.results_dir)
    echo(f"study {cfg.study.name} done in {time.perf_counter() - started:.0f}s: {len(summaries)} cells, "
         f"{trained} final run(s) trained now (the rest were stored). Results: {cfg.results_dir}  "
         f"Report: {report}")

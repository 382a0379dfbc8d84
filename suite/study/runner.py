"""``suite-study``: a preset's cells (``presets``) run as jobs (``cell``) by a launcher
(``launchers``), then the report. Resumable by construction: every final run is skipped when its
``run_id`` is stored, and each cell's tuning study lives in the Optuna storage and continues to
its trial count. A kill loses at most the runs in flight, and the rerun redoes them with the same
parameters, so it ends with the uninterrupted study's trials, tuned lrs, run ids and tables.
Several ``suite-study`` processes on one results directory cooperate (each cell is done once;
see ``suite.study.launchers``); the report is written under a lock, one process at a time.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from suite.report.build import write_report
from suite.run.validate import RUN_KEYS, check_keys, results_dir
from suite.store.locks import HolderLock, alive, worker_id
from suite.store.runs import RunStore
from suite.study.baseline import compared
from suite.study.cell import Job, check_job, notice
from suite.study.context import finished_environment, now, protocol_changes, record_wall_time, write_context
from suite.study.extras import run_extras
from suite.study.launchers import check_launcher, launch
from suite.study.presets import cell_config, expand, final_seeds, validate
from suite.tune.summary import FALLBACK, UNREACHED
from suite.types import Cell


def run_study(cfg: DictConfig, echo: Callable[[str], None] = print, started: str | None = None) -> list[dict[str, Any]]:
    """Run every cell of ``cfg.study`` (resumable; this invocation ``started`` at that ISO time);
    return one summary dict per cell."""
    study = cfg.study
    check_keys(cfg, (*RUN_KEYS, "study", "report"), "")
    results_dir(cfg.results_dir)
    cells = expand(study, validate(study))
    jobs = [job_of(cfg, cell) for cell in cells]
    check_launcher(cfg)
    for job in jobs:  # every check a cell's job makes (threads, evaluation, budget, target, tuning, ...)
        check_job(job)
    changes = protocol_changes(cfg)
    store = RunStore(cfg.results_dir)
    store.survey(notice)
    # Accepted: only now is anything written.
    store.ensure_writable()
    write_context(cfg, started or now(), changes)
    echo(f"study {study.name} ({study.get('protocol', 'budget')} protocol): {len(cells)} cells, "
         f"{len(study.seeds)} seed(s)"
         f"{f', {study.n_trials} tuning trials per cell' if study.tune else ', untuned lrs'}, "
         f"launcher {study.launcher} with {study.workers} worker(s) -> {cfg.results_dir}"
         f"{f'; beside the baseline {study.baseline} (read, never retrained)' if study.get('baseline') else ''}")
    summaries = launch(jobs, cfg)
    extra = run_extras(cfg)
    if extra:
        echo(f"{extra} extra run(s) for the batch-size science (theory, lr scaling) trained now.")
    return summaries


def job_of(cfg: DictConfig, cell: Cell) -> Job:
    """A cell's job: its run config, its final seeds, and what it is tuned as (an accumulation cell
    as the batch it emulates) or the fixed lr of an untuned study (``study.lr``, else the registry's)."""
    tuning = OmegaConf.to_yaml(cell_config(cfg, cell.emulated)) if cfg.study.tune else None
    fixed = cfg.study.get("lr") if not cfg.study.tune else None
    return Job(f"{cell.task}/{cell.optimizer}/{cell.label}", OmegaConf.to_yaml(cell_config(cfg, cell)),
               final_seeds(cfg.study, cell.task), tuning, fixed)


def _clean_stale_reports(root: Path) -> None:
    """Remove the half-built report folders of dead local processes (a kill mid-report)."""
    host = worker_id().rpartition(":")[0]
    for folder in [*root.glob(".report.tmp-*"), *root.glob(".report.old-*")]:
        pid = folder.name.rpartition("-")[2]
        if pid.isdigit() and not alive(f"{host}:{pid}"):
            shutil.rmtree(folder, ignore_errors=True)


def locked_report(root: str | Path, started: str, seconds: float) -> Path:
    """The study's report, written by one process at a time (studies sharing a directory each end here),
    then this invocation's ``seconds`` recorded: a kill before that leaves it interrupted."""
    root = Path(root)
    lock = HolderLock(root / "locks" / "report.lock")
    lock.acquire(on_wait=lambda holder: notice(f"waiting for {holder}, which is writing the report of {root}."))
    try:
        _clean_stale_reports(root)
        report = write_report(root, echo=lambda *_: None, notice=notice,
                              environment=finished_environment(root, started, seconds))
        record_wall_time(root, started, seconds)
        return report
    finally:
        lock.release()


def study_and_report(cfg: DictConfig, echo: Callable[[str], None] = print) -> None:
    """``suite-study``: run the study, then write its report (suite-report's tables and figures); with
    ``study.baseline``, the new optimizers' cells under the baseline's protocol (:mod:`suite.study.baseline`)."""
    started, began = time.perf_counter(), now()
    cfg = compared(cfg)
    summaries = run_study(cfg, echo, began)
    trained = sum(s["trained"] for s in summaries)
    fallback = [s["cell"] for s in summaries if s["lr_source"] == FALLBACK]
    if fallback:
        echo(f"{len(fallback)} cell(s) use the registry lr because no tuning trial finished without diverging "
             f"(the report marks them): {', '.join(fallback)}")
    unreached = [s["cell"] for s in summaries if s["lr_source"] == UNREACHED]
    if unreached:
        echo(f"{len(unreached)} cell(s) use the tuned lr of the trial closest to the target, since no tuning trial "
             f"reached it (the report marks them): {', '.join(unreached)}")
    report = locked_report(cfg.results_dir, began, time.perf_counter() - started)
    echo(f"study {cfg.study.name} done in {time.perf_counter() - started:.0f}s: {len(summaries)} cells, "
         f"{trained} final run(s) trained now (the rest were stored). Results: {cfg.results_dir}  "
         f"Report: {report}")

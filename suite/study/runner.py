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

from omegaconf import DictConfig

from suite.run.validate import RUN_KEYS, check_keys, results_dir
from suite.store.locks import HolderLock, alive, worker_id
from suite.store.runs import RunStore
from suite.study.baseline import compared
from suite.study.cell import Job, check_job, notice
from suite.study.context import finished_environment, now, protocol_changes, record_wall_time, write_context
from suite.study.extras import run_extras
from suite.study.launchers import check_launcher, launch, prestarted
from suite.study.parts import parts_of, retunes_of
from suite.study.presets import cell_container, expand, final_seeds, validate
from suite.study.time_split import invocation_split, with_report
from suite.train import timing
from suite.tune.summary import FALLBACK, UNREACHED
from suite.cell import Cell


def run_study(cfg: DictConfig, echo: Callable[[str], None] = print, started: str | None = None,
              split: list | None = None) -> list[dict[str, Any]]:
    """Run every cell of ``cfg.study`` (resumable; this invocation ``started`` at that ISO time);
    return one summary dict per cell. ``split``: a one-item list that receives where the time went
    (``suite.study.time_split``)."""
    split = split if split is not None else [None]
    study = cfg.study
    check_keys(cfg, (*RUN_KEYS, "study", "report"), "")
    results_dir(cfg.results_dir)
    cells = expand(study, validate(study))
    jobs = jobs_of(cfg, cells)
    check_launcher(cfg)
    with prestarted(cfg) as pool:  # a local pool's workers import torch while every cell is checked
        jobs = _checked(jobs, study)
        changes = protocol_changes(cfg)
        store = RunStore(cfg.results_dir)
        store.survey(notice)
        # Accepted: only now is anything written.
        store.ensure_writable()
        write_context(cfg, started or now(), changes)
        echo(f"study {study.name} ({' + '.join(str(p) for p in parts_of(study))} protocol): {len(cells)} cells, "
             f"{len(study.seeds)} seed(s)"
             f"{f', {study.n_trials} tuning trials per cell' if study.tune else ', untuned lrs'}; "
             f"{len(jobs)} jobs (cells x parts x tunings), launcher {study.launcher} with {study.workers} worker(s) "
             f"-> {cfg.results_dir}"
             f"{f'; beside the baseline {study.baseline} (read, never retrained)' if study.get('baseline') else ''}")
        summaries = launch(jobs, cfg, pool)
    began, phases = time.perf_counter(), timing.totals()
    extra = run_extras(cfg)
    if extra:
        echo(f"{extra} extra run(s) for the batch-size science (theory, lr scaling) trained now.")
    split[0] = invocation_split(summaries, time.perf_counter() - began, timing.delta(phases))
    return summaries


def _checked(jobs: list[Job], study: DictConfig) -> list[Job]:
    """Every check a cell's job makes (threads, evaluation, budget, target, tuning, ...); the jobs,
    longest first where several workers run them (their last cells are short ones: they end together)."""
    work = {job.label: check_job(job) for job in jobs}
    return sorted(jobs, key=lambda job: -work[job.label]) if int(study.workers) > 1 else jobs


def job_of(cfg: DictConfig, cell: Cell, part: str | None = None, retune: int = 0,
           composed: dict | None = None) -> Job:
    """A cell's job in one protocol ``part`` (None: the study's only one) and tuning (``retune``; 0:
    the primary): its run config, its final seeds, and what it is tuned as (an accumulation cell as
    the batch it emulates) or the fixed lr of an untuned study (``study.lr``, else the registry's).
    ``composed``: Hydra's groups composed so far in this listing (:func:`cell_container`)."""
    composed = {} if composed is None else composed
    config = cell_container(cfg, cell, part, composed=composed)
    itself = cell.emulated == cell and not retune  # tuned as itself, under the run config's own settings
    tuning = (config if itself else cell_container(cfg, cell.emulated, part, retune, composed)) \
        if cfg.study.tune else None
    fixed = cfg.study.get("lr") if not cfg.study.tune else None
    label = f"{cell.task}/{cell.optimizer}/{cell.label}" + (f" [{part}]" if len(parts_of(cfg.study)) > 1 else "") \
        + (f" ~r{retune}" if retune else "")
    return Job(label, config, final_seeds(cfg.study, cell.task), tuning, fixed, retune)


def jobs_of(cfg: DictConfig, cells: list[Cell]) -> list[Job]:
    """Every job of the study: each part's cells, each with its primary tuning, then its re-tunings."""
    composed: dict = {}
    return [job_of(cfg, cell, part, r, composed)
            for part in parts_of(cfg.study) for r in range(1 + max_retunes(cfg.study)) for cell in cells
            if r <= retunes_of(cfg.study, cell.task) and part in parts_of(cfg.study, cell.task)]


def max_retunes(study: DictConfig) -> int:
    return max((retunes_of(study, task) for task in study.tasks), default=0)


def _clean_stale_reports(root: Path) -> None:
    """Remove the half-built report folders of dead local processes (a kill mid-report)."""
    host = worker_id().rpartition(":")[0]
    for folder in [*root.glob(".report.tmp-*"), *root.glob(".report.old-*")]:
        pid = folder.name.rpartition("-")[2]
        if pid.isdigit() and not alive(f"{host}:{pid}"):
            shutil.rmtree(folder, ignore_errors=True)


def locked_report(root: str | Path, started: str, seconds: float, split: dict | None = None) -> Path:
    """The study's report, written by one process at a time (studies sharing a directory each end here),
    then this invocation's ``seconds`` (and time ``split``, with the report's) recorded: a kill
    before that leaves it interrupted."""
    from suite.report.build import write_report  # here: a refused or failed study never pays its imports (1 s)

    root = Path(root)
    lock = HolderLock(root / "locks" / "report.lock")
    lock.acquire(on_wait=lambda holder: notice(f"waiting for {holder}, which is writing the report of {root}."))
    try:
        _clean_stale_reports(root)
        began = time.perf_counter()
        report = write_report(root, echo=lambda *_: None, notice=notice,
                              environment=finished_environment(root, started, seconds, split))
        record_wall_time(root, started, seconds, with_report(split, time.perf_counter() - began))
        return report
    finally:
        lock.release()


def study_and_report(cfg: DictConfig, echo: Callable[[str], None] = print) -> None:
    """``suite-study``: run the study, then write its report (suite-report's tables and figures); with
    ``study.baseline``, the new optimizers' cells under the baseline's protocol (:mod:`suite.study.baseline`)."""
    started, began = time.perf_counter(), now()
    cfg = compared(cfg)
    split: list = [None]
    summaries = run_study(cfg, echo, began, split)
    trained = sum(s["trained"] for s in summaries)
    fallback = [s["cell"] for s in summaries if s["lr_source"] == FALLBACK]
    if fallback:
        echo(f"{len(fallback)} cell(s) use the registry lr because no tuning trial finished without diverging "
             f"(the report marks them): {', '.join(fallback)}")
    unreached = [s["cell"] for s in summaries if s["lr_source"] == UNREACHED]
    if unreached:
        echo(f"{len(unreached)} cell(s) use the tuned lr of the trial closest to the target, since no tuning trial "
             f"reached it (the report marks them): {', '.join(unreached)}")
    report = locked_report(cfg.results_dir, began, time.perf_counter() - started, split[0])
    echo(f"study {cfg.study.name} done in {time.perf_counter() - started:.0f}s: {len(summaries)} cells, "
         f"{trained} final run(s) trained now (the rest were stored). Results: {cfg.results_dir}  "
         f"Report: {report}")

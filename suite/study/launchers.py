"""Where a study's cells run: in this process, in N local processes, or as submitit jobs
(``suite.study.cluster``: SLURM job arrays, what the driver guarantees, its checks).

Existing engines only: ``concurrent.futures`` for local processes and submitit (SLURM on a
cluster, its local executor elsewhere). Each cell is one job; a job tunes its cell (Optuna storage
shared through ``tune.storage``) and trains its final runs; the runs store is shared through
the file system. Every worker sets its torch thread count so N workers do not oversubscribe.

Several studies may run on one results directory at once (N terminals, N SLURM jobs): the local
launchers first pass over the cells without waiting, leaving for later any cell whose trials or
final runs another process holds, then come back to those and wait for them; so the processes
spread over the cells and each cell is done once.
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any, Callable, Iterable, Iterator

from omegaconf import DictConfig
from tqdm.auto import tqdm

from suite.study.cell import Job, run_cell
from suite.study.cluster import check_submitit, run_cells
from suite.train.threads import limit_cores
from suite.types import ConfigError

Jobs = list[Job]


def _in_process(jobs: Jobs, cfg: DictConfig, bar: tqdm) -> Iterable[tuple[str, dict]]:
    later = []
    for job in jobs:  # cells another process holds are left for later ...
        bar.set_description(job.label)
        summary = run_cell(job, wait=False)
        if summary is None:
            later.append(job)
        else:
            yield job.label, summary
    for job in later:  # ... then waited for
        bar.set_description(job.label)
        yield job.label, run_cell(job, wait=True)


def _pool(cfg: DictConfig) -> ProcessPoolExecutor:
    """``study.workers`` spawned processes, each limited to its share of the cores."""
    workers = int(cfg.study.workers)
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=limit_cores,
                               initargs=(_threads(cfg),))


def _threads(cfg: DictConfig) -> int:
    return max(1, (os.cpu_count() or 1) // int(cfg.study.workers))


def _ready() -> None:
    """A worker's first task: unpickling it imports this module, so torch and the suite."""


@contextmanager
def prestarted(cfg: DictConfig) -> Iterator[ProcessPoolExecutor | None]:
    """The local launcher's pool of workers, started now: they import torch and the suite (seconds)
    while the driver checks every cell. None where cells run in this process or as submitit jobs.
    On an error (a refused cell) the pool is left without waiting for the imports."""
    if cfg.study.get("launcher") != "local" or int(cfg.study.workers) <= 1:
        yield None
        return
    pool = _pool(cfg)
    for _ in range(int(cfg.study.workers)):
        pool.submit(_ready)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _processes(jobs: Jobs, cfg: DictConfig, bar: tqdm, pool: ProcessPoolExecutor | None = None
               ) -> Iterable[tuple[str, dict]]:
    with (nullcontext(pool) if pool is not None else _pool(cfg)) as pool:
        limited = {job.label: job.with_threads(_threads(cfg)) for job in jobs}
        pending = {pool.submit(run_cell, job, False): label for label, job in limited.items()}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                label, summary = pending.pop(future), future.result()
                if summary is None:  # held by another process: wait for it this time
                    pending[pool.submit(run_cell, limited[label], True)] = label
                else:
                    yield label, summary


Launcher = Callable[[Jobs, DictConfig, tqdm, ProcessPoolExecutor | None], Iterable[tuple[str, dict]]]
LAUNCHERS: dict[str, Launcher] = {  # each gets the pool prestarted() gave (None: not the local one, or 1 worker)
    "local": lambda jobs, cfg, bar, pool: (_in_process(jobs, cfg, bar) if int(cfg.study.workers) == 1
                                           else _processes(jobs, cfg, bar, pool)),
    "submitit": lambda jobs, cfg, bar, pool: run_cells(jobs, cfg, bar),
}


def check_launcher(cfg: DictConfig) -> None:
    """Refuse launcher settings the cells cannot run with, before the study writes anything (one
    line that names the setting); an unknown ``study.launcher`` is the presets' check."""
    if cfg.study.get("launcher") == "submitit":
        check_submitit(cfg)


def launch(jobs: Jobs, cfg: DictConfig, pool: ProcessPoolExecutor | None = None) -> list[dict[str, Any]]:
    """Run every job with the configured launcher (the local one in ``pool``, where :func:`prestarted`
    gave one); one bar over cells (with ETA)."""
    launcher = cfg.study.launcher
    if launcher not in LAUNCHERS:
        raise ConfigError(f"study.launcher={launcher!r} is invalid; valid: {', '.join(LAUNCHERS)}.")
    summaries = []
    with tqdm(total=len(jobs), unit="cell", dynamic_ncols=True, disable=not cfg.progress) as bar:
        for label, summary in LAUNCHERS[launcher](jobs, cfg, bar, pool):
            summaries.append({"cell": label, **summary})
            bar.update()
    return summaries

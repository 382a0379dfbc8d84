"""Benchmark grid and timing helpers for ``tests/benchmarks/`` (pytest-benchmark).

The grid is ``suite.bench.GRIDS[$OPTSUITE_BENCH]`` (``full`` unless set; ``fast`` is CI's tiny
grid), narrowed by ``OPTSUITE_BENCH_TASKS``, ``_OPTIMIZERS``, ``_BATCHES``, ``_DEVICE`` and
``_THREADS`` (``suite.bench.ENV`` explains each). Tests ask for ``train_cell``,
``accumulation_cell`` or ``opt_cell`` and get one parametrized case per grid cell. The default test run skips benchmarks (``--benchmark-skip`` in pyproject);
``make bench`` runs them for real and saves JSON under ``results/bench/``.
"""
from __future__ import annotations

import os
import time
from typing import Callable

import pytest
import torch

from suite.bench.steps import BenchCase, Grid, grid_from_env, samples_per_s
from suite.tasks import build_task
from suite.train.rows import environment
from suite.types import DataError, Task

GRID = grid_from_env(os.environ)


def pytest_generate_tests(metafunc):
    cells = {"train_cell": GRID.train_cells, "accumulation_cell": GRID.accumulation_cells,
             "opt_cell": GRID.opt_cells}
    for name, make in cells.items():
        if name in metafunc.fixturenames:
            chosen = make()
            metafunc.parametrize(name, chosen, ids=[c.id for c in chosen])


@pytest.fixture(scope="session")
def grid() -> Grid:
    if GRID.threads is not None:  # once for the session: every benchmark then records the same count
        torch.set_num_threads(GRID.threads)
    return GRID


@pytest.fixture(scope="session")
def get_task() -> Callable[[BenchCase], Task]:
    """Tasks built once per session; a task whose data is missing skips its benchmarks."""
    cache: dict[str, Task] = {}

    def get(cell: BenchCase) -> Task:
        key = repr(sorted(cell.task_options.items()))
        if key not in cache:
            try:
                cache[key] = build_task(cell.task_options)
            except DataError as e:
                pytest.skip(f"{cell.task}: {e}")
        return cache[key]

    return get


def _synced(fn: Callable, device: torch.device) -> Callable:
    """On CUDA the clock must not stop before the kernels finish."""
    if device.type != "cuda":
        return fn

    def call():
        fn()
        torch.cuda.synchronize(device)

    return call


@pytest.fixture
def run_benchmark(benchmark, grid: Grid):
    """``run_benchmark(fn, device, batch_size=None, **info)``: calibrate, time, record.

    Iterations per round are set so a round lasts about ``grid.round_seconds`` (tiny steps are
    timed in bulk, clock resolution stays negligible); slow steps get fewer rounds, at least 3.
    ``extra_info`` gets the facts of the cell, the machine, and ``samples_per_s`` from the median.
    """

    def run(fn: Callable, device: torch.device, batch_size: int | None = None, **info):
        fn = _synced(fn, device)
        fn()  # first call: lazy allocations (optimizer state, kernels) happen outside the estimate
        t0 = time.perf_counter()
        for _ in range(3):
            fn()
        per_call = (time.perf_counter() - t0) / 3
        iterations = max(1, round(grid.round_seconds / per_call))
        rounds = int(min(grid.rounds, max(3, grid.max_seconds // (per_call * iterations))))
        benchmark.extra_info.update(environment(str(device)), grid=grid.name, batch_size=batch_size, **info)
        benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=grid.warmup_rounds)
        if batch_size is not None and benchmark.stats is not None:
            benchmark.extra_info["samples_per_s"] = samples_per_s(batch_size, benchmark.stats.stats.median)

    return run

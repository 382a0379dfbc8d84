"""Stacked vs sequential training, side by side in one process (skipped by default).

Run: ``.venv/bin/pytest tests/benchmarks/test_stacked_bench.py --benchmark-only -s``

Each round trains the same K = 64 configurations (one cell, 64 learning rates) twice,
interleaved: 64 ordinary ``train`` runs one after another, then one ``train_stacked``; the
ratios of their times are reported per round and as medians (``extra_info``, and printed).
``train`` is the training clock (warm-up and evaluation excluded; the stacked clock is the sum
of the configurations' shares, i.e. the stack's time), ``wall`` is everything, evaluation and
model building included. Targets: >= 30x at batch 1 and >= 10x at batch 32 on
tiny_mlp and regression. The machine may be shared, so only the ratios mean anything.

Both sides run on one torch thread (the ``one_thread`` fixture below): on a shared machine a
second intra-op thread waits for a core another process holds, which hits the stacked side's
larger ops (which torch parallelizes) and not the single runs' tiny ones, so the ratio would
measure the neighbours. One thread per process is also how the matrix runs its workers.
"""
from __future__ import annotations

import dataclasses
import statistics
import time

import pytest
import torch

from suite.optim.registry import OPTIMIZERS, resolve_hparams
from suite.tasks import build_task
from suite.train import train
from suite.train.stacked import train_stacked
from suite.types import DataError, EvalSpec, RunSpec

K = 64
ROUNDS = 3
FASHION = {"name": "fashion_mnist", "train_size": 2000, "val_size": 1000}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def lr_cell(task_name: str, optimizer: str, batch_size: int, steps: int | None, points: int = 2,
            epochs: float = 1e9) -> list[RunSpec]:
    """K configurations of one cell: learning rates log-spaced over the optimizer's search range."""
    lo, hi = OPTIMIZERS[optimizer].lr_range
    base = RunSpec(task=task_name, optimizer=optimizer, hparams=resolve_hparams(optimizer, {}), lr=lo,
                   batch_size=batch_size, epochs=epochs, max_steps=steps, eval=EvalSpec(points=points))
    return [dataclasses.replace(base, lr=lo * (hi / lo) ** (i / (K - 1))) for i in range(K)]


def side_by_side(task, specs, rounds: int = ROUNDS, **stacked_kw) -> dict[str, float]:
    """Interleaved rounds of sequential and stacked training; median ratios (sequential / stacked)."""
    train_ratio, wall_ratio, seq_train, st_train = [], [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        seq = [train(task, s) for s in specs]
        t1 = time.perf_counter()
        st = train_stacked(task, specs, **stacked_kw)
        t2 = time.perf_counter()
        seq_s, st_s = sum(r.train_seconds for r in seq), sum(r.train_seconds for r in st)
        train_ratio.append(seq_s / st_s)
        wall_ratio.append((t1 - t0) / (t2 - t1))
        seq_train.append(seq_s)
        st_train.append(st_s)
    return {"train_ratio": statistics.median(train_ratio), "wall_ratio": statistics.median(wall_ratio),
            "train_ratios": [round(r, 2) for r in train_ratio], "sequential_train_s": statistics.median(seq_train),
            "stacked_train_s": statistics.median(st_train)}


def report(benchmark, name: str, numbers: dict) -> None:
    benchmark.extra_info.update(numbers)
    print(f"\n{name}: " + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items()))


def once(benchmark, fn):
    """pytest-benchmark wants one timed call; the numbers that matter are the ratios inside it."""
    benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)


@pytest.mark.parametrize("batch_size", [1, 32])
@pytest.mark.parametrize("task_name", ["tiny_mlp", "regression"])
def test_throughput_tiny_tasks(benchmark, task_name, batch_size):
    task = build_task({"name": task_name})
    specs = lr_cell(task_name, "adam", batch_size, steps=200)
    numbers = {}
    once(benchmark, lambda: numbers.update(side_by_side(task, specs)))
    report(benchmark, f"{task_name} adam b={batch_size} K={K}", numbers)


@pytest.mark.parametrize("batch_size", [1, 32])
def test_throughput_fashion_mlp(benchmark, batch_size):
    try:
        task = build_task(FASHION)
    except DataError as e:
        pytest.skip(str(e))
    specs = lr_cell("fashion_mnist", "adam", batch_size, steps=50)
    numbers = {}
    once(benchmark, lambda: numbers.update(side_by_side(task, specs, rounds=2)))
    report(benchmark, f"fashion_mnist mlp adam b={batch_size} K={K}", numbers)


@pytest.mark.parametrize("batch_size", [1, 32])
def test_hand_written_layers_vs_vmap(benchmark, batch_size):
    """Both stacked methods against each other (training clock), interleaved."""
    task = build_task({"name": "tiny_mlp"})
    specs = lr_cell("tiny_mlp", "adam", batch_size, steps=200)
    ratios = []

    def rounds():
        for _ in range(ROUNDS):
            layers = sum(r.train_seconds for r in train_stacked(task, specs, method="layers"))
            vmapped = sum(r.train_seconds for r in train_stacked(task, specs, method="vmap"))
            ratios.append(vmapped / layers)

    once(benchmark, rounds)
    report(benchmark, f"tiny_mlp b={batch_size}: vmap time / hand-written time",
           {"ratio": statistics.median(ratios), "ratios": [round(r, 2) for r in ratios]})


@pytest.mark.parametrize("task_name", ["tiny_mlp", "regression"])
def test_lr_sweep_end_to_end(benchmark, task_name):
    """A 64-learning-rate search on one cell (SGD at batch 1, one epoch, the default 30 evaluation
    points; the high lrs diverge): wall time of sequential runs vs one stack."""
    task = build_task({"name": task_name})
    specs = lr_cell(task_name, "sgd", 1, steps=None, points=30, epochs=1.0)
    numbers = {}

    def sweep():
        t0 = time.perf_counter()
        seq = [train(task, s) for s in specs]
        t1 = time.perf_counter()
        st = train_stacked(task, specs)
        t2 = time.perf_counter()
        numbers.update(sequential_s=t1 - t0, stacked_s=t2 - t1, ratio=(t1 - t0) / (t2 - t1),
                       diverged=sum(r.diverged for r in st))
        assert [r.diverged for r in st] == [r.diverged for r in seq]

    once(benchmark, sweep)
    report(benchmark, f"{task_name} 64-lr sweep (sgd, b=1, 1 epoch)", numbers)

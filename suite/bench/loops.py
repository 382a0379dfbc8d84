"""Side-by-side loop benchmark: the suite's training loop vs the loops people write by hand.

Three loops train the same model (``task.make_model(seed)``), on the same data tensors, with the
same optimizer object (``build_optimizer``, same implementation, e.g. fused) and batch size:

* ``suite``      - :func:`suite.train.train` with two evaluation points (step 0 and the end, both
  outside its clock); seconds per step = the run's ``train_seconds / (steps - warmup)``;
* ``hand``       - a minimal PyTorch loop: randperm slices, zero_grad, forward, backward, step,
  drawing the suite's batch order (its seed, epochs joined without a seam), so both loops take
  the same steps: the same values, so the same subnormal arithmetic (Adam's second moments of
  rarely lit pixels decay below 1e-38, where the CPU is slow: about a quarter of a Fashion-MNIST
  Adam step at batch 16), and only the loops differ;
* ``dataloader`` - tutorial 003's loop: ``DataLoader(TensorDataset(x, y), batch_size=b, shuffle=True)``,
  in the sampler's batch order: another trajectory, with its own share of subnormal arithmetic.

The machine is shared and noisy, so the loops are interleaved, cycling through every order of
the three (a loop's position in the round biases it), and each cell reports the median over
repetitions of seconds per step, the ratios of those medians, and the medians of the
per-repetition ratios ("paired"). :func:`matmul_fraction` relates the MLP's large-batch
step to the fp32 matmul rate this machine measures on the same GEMM shapes.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from suite.optim.build import build_optimizer
from suite.optim.registry import get_spec
from suite.report.benchmarks import table_markdown
from suite.tasks import build_task
from suite.train.batches import stream_seed
from suite.train.device import DTYPES, set_threads
from suite.train.evaluation import eval_splits, evaluate
from suite.train.single import train
from suite.types import EvalSpec, RunSpec, SuiteError, Task

# (task, batch size, steps per measurement): steps chosen so one measurement takes ~0.2-0.5 s.
CELLS = (("tiny_mlp", 1, 3000), ("tiny_mlp", 32, 3000), ("fashion_mnist", 1, 2000),
         ("fashion_mnist", 16, 1500), ("fashion_mnist", 128, 400))
WARMUP = 20  # steps run before the clock starts, in every loop


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cell_spec(task: Task, optimizer: str, batch_size: int, steps: int, device: str = "cpu",
              seed: int = 0) -> RunSpec:
    """A suite run of exactly ``steps`` steps, evaluated at step 0 and the end only.

    Evaluation is outside every loop's clock; it reads 2048 training samples and skips the test
    split only to keep the harness's wall time down.
    """
    epochs = math.ceil((steps + 1) * batch_size / task.n_train) + 1.0  # the step cap binds, not epochs
    return RunSpec(task=task.name, optimizer=optimizer, hparams={}, lr=get_spec(optimizer).lr_default,
                   batch_size=batch_size, seed=seed, epochs=epochs, max_steps=steps, warmup_steps=WARMUP,
                   eval=EvalSpec(points=2, schedule="linear", train_subset=2048, test=False), device=device)


def _setup(task: Task, spec: RunSpec):
    device, dtype = torch.device(spec.device), DTYPES[spec.dtype]
    task = task.to(device, dtype)
    model = task.make_model(spec.seed).to(device, dtype)
    opt, _ = build_optimizer(spec.optimizer, model.parameters(), spec.lr, spec.hparams, spec.impl)
    return device, task, model, opt


def _finish(device, t0: float, model, task: Task, spec: RunSpec) -> tuple[float, float]:
    _sync(device)
    seconds = (time.perf_counter() - t0) / (spec.max_steps - spec.warmup_steps)
    return seconds, evaluate(model, task, eval_splits(task, spec.eval)[0], spec.eval.batch)[0]  # after the clock


def suite_loop(task: Task, spec: RunSpec) -> tuple[float, float]:
    """Seconds per timed step of :func:`suite.train.single.train`, and its final training loss."""
    result = train(task, spec)
    return result.train_seconds / max(result.steps - spec.warmup_steps, 1), result.rows[-1]["train_loss"]


def hand_loop(task: Task, spec: RunSpec) -> tuple[float, float]:
    """A minimal hand-written loop over randperm slices: seconds per step, final training loss."""
    device, task, model, opt = _setup(task, spec)
    x, y, loss_fn, n, b = task.train.x, task.train.y, task.loss, task.n_train, spec.batch_size
    gen = torch.Generator(device=device).manual_seed(stream_seed(spec.seed))
    perm, pos, t0 = torch.randperm(n, generator=gen, device=device), 0, 0.0
    for step in range(spec.max_steps):
        if step == spec.warmup_steps:
            _sync(device)
            t0 = time.perf_counter()
        if pos + b > len(perm):  # the next epoch's order after what is left of this one
            perm, pos = torch.cat([perm[pos:], torch.randperm(n, generator=gen, device=device)]), 0
        idx = perm[pos:pos + b]
        pos += b
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    return _finish(device, t0, model, task, spec)


def dataloader_loop(task: Task, spec: RunSpec) -> tuple[float, float]:
    """Tutorial 003's loop, epochs over a shuffling DataLoader: seconds per step, final loss."""
    device, task, model, opt = _setup(task, spec)
    loader = DataLoader(TensorDataset(task.train.x, task.train.y), batch_size=spec.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(spec.seed))
    step, t0 = 0, 0.0
    while step < spec.max_steps:
        for xb, yb in loader:
            if step == spec.warmup_steps:
                _sync(device)
                t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = task.loss(model(xb), yb)
            loss.backward()
            opt.step()
            step += 1
            if step == spec.max_steps:
                break
    return _finish(device, t0, model, task, spec)


LOOPS: dict[str, Callable[[Task, RunSpec], tuple[float, float]]] = {
    "suite": suite_loop, "hand": hand_loop, "dataloader": dataloader_loop,
}


def compare_cell(task: Task, spec: RunSpec, repeats: int, loops=tuple(LOOPS)) -> dict:
    """Median µs per step of each loop over ``repeats`` interleaved repetitions, and the ratios.

    ``suite/<loop>`` is the ratio of the medians; ``suite/<loop> paired`` the median of the
    per-repetition ratios (neighbours in time share the machine's load, so drift cancels).
    """
    times: dict[str, list[float]] = {name: [] for name in loops}
    orders = list(itertools.permutations(loops))
    for i in range(repeats):
        # Interleaved, so a burst of load on the machine hits every loop alike, cycling through
        # every order (ABC, ACB, BAC, ...) because a loop's position in the round biases it.
        for name in orders[i % len(orders)]:
            times[name].append(LOOPS[name](task, spec)[0])
    row = {f"{name}_us": 1e6 * statistics.median(ts) for name, ts in times.items()}
    for other in (name for name in ("hand", "dataloader") if name in times and "suite" in times):
        row[f"suite/{other}"] = row["suite_us"] / row[f"{other}_us"]
        row[f"suite/{other} paired"] = statistics.median(s / o for s, o in zip(times["suite"], times[other]))
    return row


def compare_loops(optimizers=("sgd", "adam"), cells=CELLS, repeats: int = 5, step_scale: float = 1.0,
                  device: str = "cpu", tasks: dict[str, Task] | None = None, echo=None) -> pd.DataFrame:
    """One row per (task, batch size, optimizer): median µs per step of each loop and the ratios.

    ``echo(row)``, if given, sees each row as soon as it is measured (progress on long runs).
    """
    tasks = dict(tasks or {})
    rows = []
    for task_name, batch_size, steps in cells:
        task = tasks.setdefault(task_name, build_task({"name": task_name}))
        steps = max(int(steps * step_scale), WARMUP + 5)
        for optimizer in optimizers:
            spec = cell_spec(task, optimizer, batch_size, steps, device)
            impl = build_optimizer(optimizer, [torch.zeros(1, requires_grad=True)], spec.lr, {})[1]
            rows.append({"task": task_name, "batch_size": batch_size, "optimizer": optimizer, "impl": impl,
                         "steps": steps, "repeats": repeats, **compare_cell(task, spec, repeats)})
            if echo is not None:
                echo(rows[-1])
    return pd.DataFrame(rows)


def mlp_gemms(widths: list[int], batch: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product in one forward+backward of an MLP with these widths.

    Per layer ``in -> out``: forward ``(B,in)@(in,out)``, weight gradient ``(out,B)@(B,in)``, and
    the input gradient ``(B,out)@(out,in)`` for every layer but the first (the data needs none).
    """
    shapes = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        shapes += [(batch, a, b), (b, batch, a)] + ([(batch, b, a)] if i > 0 else [])
    return shapes


def gemm_flops(shapes: list[tuple[int, int, int]]) -> int:
    return sum(2 * m * k * n for m, k, n in shapes)


def matmul_rate(shapes: list[tuple[int, int, int]], repeats: int = 5, device: str = "cpu") -> float:
    """Measured fp32 ``torch.mm`` FLOP/s over the given shapes (median of ``repeats`` passes)."""
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(0)
    pairs = [(torch.randn(m, k, generator=gen, device=dev), torch.randn(k, n, generator=gen, device=dev))
             for m, k, n in shapes]
    flops, passes = gemm_flops(shapes), []
    for i in range(repeats + 1):
        _sync(dev)
        t0 = time.perf_counter()
        for a, b in pairs:
            torch.mm(a, b)
        _sync(dev)
        if i:  # the first pass warms up the BLAS kernels and is not counted
            passes.append(time.perf_counter() - t0)
    return flops / statistics.median(passes)


def matmul_fraction(batch: int = 4096, steps: int = 30, repeats: int = 5, device: str = "cpu",
                    optimizer: str = "sgd", task: Task | None = None, square: int = 2048) -> dict:
    """The fashion_mnist MLP's training step at ``batch`` as a fraction of measured matmul rates.

    Interleaves suite runs (seconds per step from the run's clock) with ``torch.mm`` passes over
    the step's own GEMM shapes and over a ``square``³ product (the machine's plain matmul rate);
    reports medians. FLOPs are the step's matrix products exactly (:func:`mlp_gemms`); the
    elementwise work (bias, ReLU, loss, optimizer) is not counted, so it lowers the fraction.
    """
    task = task or build_task({"name": "fashion_mnist"})
    model = task.make_model(0)
    widths = [m.in_features for m in model if isinstance(m, torch.nn.Linear)] + [model[-1].out_features]
    shapes = mlp_gemms(widths, batch)
    spec = replace(cell_spec(task, optimizer, batch, steps, device), warmup_steps=3)
    step_s, shape_rate, square_rate = [], [], []
    for _ in range(repeats):
        step_s.append(suite_loop(task, spec)[0])
        shape_rate.append(matmul_rate(shapes, 3, device))
        square_rate.append(matmul_rate([(square, square, square)], 3, device))
    achieved = gemm_flops(shapes) / statistics.median(step_s)
    shapes_gflops, square_gflops = statistics.median(shape_rate) / 1e9, statistics.median(square_rate) / 1e9
    return {
        "task": task.name, "model": task.model_name, "batch_size": batch, "optimizer": optimizer,
        "step_ms": 1e3 * statistics.median(step_s), "step_gflop": gemm_flops(shapes) / 1e9,
        "achieved_gflops": achieved / 1e9, "mm_same_shapes_gflops": shapes_gflops,
        "mm_square_gflops": square_gflops, "square": square, "fraction_of_same_shapes": achieved / 1e9 / shapes_gflops,
        "fraction_of_best_mm": achieved / 1e9 / max(shapes_gflops, square_gflops),
        "threads": torch.get_num_threads(), "device": device,
    }


def _line(row: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def main(argv: list[str] | None = None) -> int:
    """``scripts/bench_loop.py``: print the loop ratios and the matmul fraction; save them as CSV."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bench", help="directory for loop_ratios.csv and matmul.csv")
    p.add_argument("--repeats", type=int, default=12,
                   help="interleaved repetitions per cell (medians); a multiple of 6 balances the orders")
    p.add_argument("--step-scale", type=float, default=1.0, help="multiply every cell's step count")
    p.add_argument("--optimizers", default="sgd,adam")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--matmul-batch", type=int, default=4096)
    p.add_argument("--skip-matmul", action="store_true")
    p.add_argument("--threads", type=int, default=os.environ.get("OPTSUITE_BENCH_THREADS") or None,
                   help="torch intra-op threads (default: $OPTSUITE_BENCH_THREADS, else torch's choice)")
    args = p.parse_args(argv)
    try:
        return _run(args)
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ratios = compare_loops(tuple(args.optimizers.split(",")), repeats=args.repeats, step_scale=args.step_scale,
                           device=args.device, echo=lambda row: print(_line(row), flush=True))
    ratios["device"], ratios["threads"] = args.device, torch.get_num_threads()
    tables = {"loop_ratios": ratios}
    if not args.skip_matmul:
        tables["matmul"] = pd.DataFrame([matmul_fraction(args.matmul_batch, repeats=max(args.repeats // 2, 3),
                                                         device=args.device)])
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.md").write_text(table_markdown(table))
        print(f"\n{name} (saved as {out / name}.csv and .md):\n{table_markdown(table)}")
    return 0

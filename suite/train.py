"""The one training loop: batches, accumulation, evaluation schedule, honest timing, divergence.

Reads top to bottom: pick a batch -> forward -> backward (per micro-batch) -> step -> check
divergence -> at evaluation points stop the clock and measure the full splits.

Batches are index slices of a stream of samples: ``shuffle`` concatenates a fresh permutation
per epoch, ``sequential`` repeats 0..n-1 (the seed's ``ix = (t*batch_size) % n``), and
``replacement`` draws i.i.d. indices. Every step sees exactly ``batch_size`` samples, so a batch
may straddle an epoch boundary; an epoch is ``n`` samples seen.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from suite.optimizers import build_optimizer
from suite.types import EvalSpec, RunResult, RunSpec, Split, Task

DTYPES = {"float32": torch.float32, "float64": torch.float64}
Selector = slice | Tensor  # a batch: a slice (a view, no copy) or an index tensor
OnEval = Callable[[dict], bool]  # called with each evaluation row; True stops the run (pruned)


def total_steps(spec: RunSpec, n: int) -> int:
    """Steps for ``spec.epochs`` epochs of ``n`` samples, capped by ``max_steps``."""
    steps = math.ceil(spec.epochs * n / spec.batch_size - 1e-9)
    return min(steps, spec.max_steps) if spec.max_steps is not None else steps


def eval_steps(ev: EvalSpec, total: int, n: int, batch_size: int) -> list[int]:
    """Sorted steps at which to evaluate; always includes 0 and ``total``."""
    if ev.every_steps:
        steps = np.arange(0, total + 1, ev.every_steps)
    elif ev.every_epochs:
        per_epoch = n / batch_size
        steps = np.round(np.arange(0.0, total / per_epoch + 1e-9, ev.every_epochs) * per_epoch)
    elif ev.schedule == "log" and total > 1:
        steps = np.round(np.geomspace(1, total, max(ev.points - 1, 1)))
    else:
        steps = np.round(np.linspace(0, total, max(ev.points, 2)))
    return sorted({0, total, *(int(s) for s in steps if 0 <= s <= total)})


def schedule(spec: RunSpec, n: int) -> tuple[int, list[int], list[int]]:
    """Total steps, evaluation steps, and the ticks where the loop pauses (the clock stops):
    evaluations, every ~1% for the progress bar, and the end of warm-up."""
    total = total_steps(spec, n)
    evals = eval_steps(spec.eval, total, n, spec.batch_size)
    ticks = sorted(set(evals) | set(range(0, total, max(total // 100, 1))) | {min(spec.warmup_steps, total)})
    return total, evals, ticks


class BatchStream:
    """Yields one batch selector per step; the order depends on the seed only."""

    def __init__(self, n: int, batch_size: int, sampling: str, seed: int, device: torch.device):
        self.n, self.b, self.sampling, self.device = n, batch_size, sampling, device
        self.gen = torch.Generator(device=device).manual_seed(1_000_003 * seed + 7)
        self.buf = torch.empty(0, dtype=torch.long, device=device)
        self.pos = 0  # position in the stream (sequential) or in ``buf`` (shuffle)

    def __iter__(self) -> Iterator[Selector]:
        n, b = self.n, self.b
        if b == n and self.sampling != "replacement":
            # Full batch: every step sees all n samples and the mean loss does not depend on
            # their order, so skip the permutation and its copy of the whole dataset.
            while True:
                yield slice(None)
        while True:
            if self.sampling == "replacement":
                yield torch.randint(n, (b,), generator=self.gen, device=self.device)
            elif self.sampling == "sequential":
                start = self.pos % n
                self.pos += b
                yield slice(start, start + b) if start + b <= n else \
                    torch.arange(start, start + b, device=self.device) % n
            else:  # shuffle
                if self.pos + b > len(self.buf):
                    fresh = torch.randperm(n, generator=self.gen, device=self.device)
                    self.buf, self.pos = torch.cat([self.buf[self.pos:], fresh]), 0
                yield self.buf[self.pos:self.pos + b]
                self.pos += b


def micro_batches(sel: Selector, n: int, k: int) -> list[Selector]:
    """Split one batch into ``k`` equal micro-batches."""
    if k == 1:
        return [sel]
    if isinstance(sel, slice):
        start, stop, _ = sel.indices(n)
        m = (stop - start) // k
        return [slice(start + i * m, start + (i + 1) * m) for i in range(k)]
    return list(sel.chunk(k))


class Clock:
    """Training-time clock: the device is synchronized before every reading."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.elapsed, self.t0 = 0.0, None

    def start(self) -> None:
        self.sync()
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        if self.t0 is not None:
            self.sync()
            self.elapsed += time.perf_counter() - self.t0
            self.t0 = None


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, split: Split, chunk: int) -> tuple[float, float]:
    """Mean loss (and accuracy for classifiers, else NaN) over a whole split, in chunks."""
    if len(split) == 0:
        return math.nan, math.nan
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(split), chunk):
        x, y = split.x[i:i + chunk], split.y[i:i + chunk]
        out = model(x)
        loss_sum += task.loss(out, y).item() * len(x)  # .item() syncs; eval is not timed
        if task.classifier:
            correct += (out.argmax(1) == y).sum().item()
    model.train()
    n = len(split)
    return loss_sum / n, (correct / n if task.classifier else math.nan)


def eval_splits(task: Task, ev: EvalSpec) -> tuple[Split, Split, Split]:
    """The (train, val, test) splits an evaluation measures: the training loss on the first
    ``train_subset`` samples if set, and an empty test split (NaN) when ``test`` is off."""
    train = task.train if ev.train_subset is None else Split(task.train.x[:ev.train_subset],
                                                               task.train.y[:ev.train_subset])
    test = task.test if ev.test else Split(task.test.x[:0], task.test.y[:0])
    return train, task.val, test


def _eval_row(model, task, spec, step, clock, last_loss) -> dict:
    chunk = spec.eval.batch
    splits = [evaluate(model, task, split, chunk) for split in eval_splits(task, spec.eval)]
    return eval_row(task, spec, step, clock.elapsed, last_loss, *splits)


def eval_row(task: Task, spec: RunSpec, step: int, time_s: float, last_loss: float,
             train: tuple[float, float], val: tuple[float, float], test: tuple[float, float]) -> dict:
    """One evaluation row from the (loss, accuracy) of each split; shared with ``suite.stacked``."""
    (train_loss, _), (val_loss, val_acc), (test_loss, test_acc) = train, val, test
    samples = step * spec.batch_size
    return {
        "step": step, "epoch": samples / task.n_train, "samples": samples, "time_s": time_s,
        "train_loss": train_loss, "minibatch_loss": last_loss, "val_loss": val_loss, "test_loss": test_loss,
        "val_accuracy": val_acc, "test_accuracy": test_acc,
        "excess_loss": train_loss - task.optimal_loss if task.optimal_loss is not None else math.nan,
    }


def make_step(model: nn.Module, opt: torch.optim.Optimizer, task: Task, spec: RunSpec,
              batches: Iterator[Selector]) -> Callable[[], float]:
    """One training step as a function: the unit :func:`train` repeats and tests/benchmarks time.

    The step takes the next batch, zeroes the gradients, runs forward and backward on each of its
    ``k`` micro-batches (gradients add up, each scaled by ``1/k`` for ``mean``), steps the
    optimizer and returns the batch's mean loss. ``task`` is already on the run's device.
    """
    x, y, n, k, loss_fn = task.train.x, task.train.y, task.n_train, spec.accumulation_steps, task.loss
    scale = 1.0 / k if spec.accumulation_reduction == "mean" else 1.0  # "sum": the seed's variant

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        if k == 1:  # skip the scale and sum ops: they cost ~13% of a batch-1 tiny_mlp step on CPU
            sel = next(batches)
            loss = loss_fn(model(x[sel]), y[sel])
            loss.backward()
            opt.step()
            return loss.item()  # .item() syncs the device: exact per-step divergence check
        loss = 0.0
        for part in micro_batches(next(batches), n, k):
            micro = loss_fn(model(x[part]), y[part])
            (micro * scale).backward()
            loss = loss + micro.detach()
        opt.step()
        return loss.item() / k

    return step


def train(task: Task, spec: RunSpec, progress: bool = False, on_eval: OnEval | None = None) -> RunResult:
    """Train one configuration; return its curve (one row per evaluation point).

    ``on_eval(row)`` sees every evaluation row after step 0; returning True stops the run there
    (a tuner's pruning decision), recorded as ``pruned``.
    """
    device, dtype = torch.device(spec.device), DTYPES[spec.dtype]
    task = task.to(device, dtype)
    model = task.make_model(spec.seed).to(device, dtype)
    opt, impl = build_optimizer(spec.optimizer, model.parameters(), spec.lr, spec.hparams, spec.impl)
    n = task.n_train
    total, evals, ticks = schedule(spec, n)
    clock, batches = Clock(device), iter(BatchStream(n, spec.batch_size, spec.sampling, spec.seed, device))
    train_step = make_step(model, opt, task, spec, batches)

    rows = [_eval_row(model, task, spec, 0, clock, math.nan)]
    limit = spec.divergence_factor * max(rows[0]["train_loss"], 1e-12)
    diverged, step, last_loss = not rows[0]["train_loss"] <= limit, 0, math.nan
    pruned = False
    bar = tqdm(total=total, disable=not progress, unit="step", dynamic_ncols=True, leave=False)
    for stop in ticks[1:]:
        if diverged:
            break
        if step >= spec.warmup_steps:
            clock.start()  # warm-up steps (the first ones) are run but not timed
        while step < stop:
            step += 1
            last_loss = train_step()
            if not last_loss <= limit:  # NaN, inf or exploded
                diverged = True
                break
        clock.stop()
        bar.update(step - bar.n)
        out_of_time = spec.max_seconds is not None and clock.elapsed >= spec.max_seconds
        if step in evals or diverged or out_of_time:
            rows.append(_eval_row(model, task, spec, step, clock, last_loss))
            diverged = diverged or not rows[-1]["train_loss"] <= limit
            bar.set_postfix(train_loss=f"{rows[-1]['train_loss']:.4g}", refresh=False)
            pruned = not diverged and on_eval is not None and step < total and bool(on_eval(rows[-1]))
        if out_of_time or pruned:
            break
    bar.close()
    return RunResult(rows=rows, diverged=diverged, steps=step, train_seconds=clock.elapsed, impl=impl,
                     pruned=pruned)


def train_many(task: Task, specs: list[RunSpec], progress: bool = False,
               on_eval: Callable[[int, dict], bool] | None = None) -> list[RunResult]:
    """Train several configurations of one cell (same task, optimizer, batch size); one result each.

    ``on_eval(i, row)`` is configuration i's pruning callback (see :func:`train`).
    When the configurations form one cell and the model is small (``suite.stacked.stacking_pays``)
    they train as one stacked model (``suite.stacked.train_stacked``), whose results equal the
    sequential reference's below to float tolerance (tests/test_stacked.py); else the reference:
    one ordinary run after another.
    """
    from suite.stacked import stacking_pays, train_stacked  # here: suite.stacked builds on this module

    if stacking_pays(task, specs):
        return train_stacked(task, specs, progress=progress, on_eval=on_eval)

    def callback(i: int) -> OnEval | None:
        return None if on_eval is None else (lambda row: on_eval(i, row))

    return [train(task, spec, progress=progress, on_eval=callback(i)) for i, spec in enumerate(specs)]

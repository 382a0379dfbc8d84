"""Stacked training: K configurations of one cell (different lrs and/or seeds) trained as one model.

On the tiny tasks a step is a few hundred microseconds of framework overhead and almost no
arithmetic, so K runs one after another cost K times the overhead. Here the K models are one
stacked model (``suite.stacked_models``): one forward/backward per step for all K, each
configuration's loss its own batch mean (so its gradient is its unstacked gradient), and ONE
real ``torch.optim`` optimizer with per-configuration learning rates (``suite.stacked_step``
explains why stepping at lr = 1 and scaling each configuration's update by its lr is exact).

Each configuration behaves like its single run (``suite.train.train``) and produces the same
rows: same batches (one batch stream per seed), same evaluation steps, same divergence rule; a
configuration that diverges, is pruned by ``on_eval`` or runs out of time gets its last row and
leaves the stack (its parameters stop changing; the others continue unchanged).

Timing (``time_s``, ``train_seconds``): the stack's training clock (warm-up and evaluation
excluded, as in a single run) is apportioned among the configurations live while it ran: each
interval's time divided by the number of live configurations. A configuration's ``time_s`` is
thus its share of the compute, and the configurations' times add up to the stack's clock.
Why: this keeps time a per-run cost (a stack of 64 does not report 64 runs' worth of seconds
per run) and keeps ``max_seconds`` a per-configuration budget like in a single run. It is not
the time the run would take alone (that is larger: stacking is the point); compare
``time_s`` only between runs trained with the same stacking.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from suite.stacked_models import stack_models, stacked_loss, unstack
from suite.stacked_step import Stack, StackBatches, evaluate_stacked, lr_affine
from suite.train import DTYPES, Clock, OnEval, eval_row, eval_splits, evaluate, schedule, train
from suite.types import ConfigError, RunResult, RunSpec, Task

# RunSpec fields that may differ between the configurations of one stack.
PER_CONFIG = ("lr", "seed")


def cell_mismatch(specs: Sequence[RunSpec]) -> str | None:
    """Why ``specs`` are not one cell (everything equal but lr and seed), or None if they are."""
    if not specs:
        return "no configurations given"
    first = dataclasses.asdict(specs[0])
    for spec in specs[1:]:
        other = dataclasses.asdict(spec)
        for key, value in first.items():
            if key not in PER_CONFIG and other[key] != value:
                return f"{key} differs ({value!r} vs {other[key]!r})"
    return None


def check_stackable(specs: Sequence[RunSpec]) -> None:
    problem = cell_mismatch(specs)
    if problem:
        raise ConfigError(
            f"cannot train these configurations stacked: {problem}. A stack is one cell: every setting "
            f"equal except {' and '.join(PER_CONFIG)}. Group them by cell, or use suite.train.train_many."
        )
    if not lr_affine(specs[0].optimizer):
        raise ConfigError(
            f"optimizer {specs[0].optimizer!r} is not known to be affine in lr, so per-configuration "
            f"learning rates cannot share one optimizer; train it with suite.train.train_many."
        )


# Stack when a configuration's step is this small: parameters × micro-batch per configuration.
# Measured on CPU (K = 64, torch 2.13, 2 shared cores; stacked vs sequential training time):
# tiny_mlp 1-H-1, Adam: 301 params × b1 60x, × b32 6.9x; 3001 × b1 10x, × b32 1.5x; 9001 × b32
# 0.5x; the fashion_mnist MLP (235k params) 0.65-0.9x at b1 and b32. Small steps are framework
# overhead, which stacking shares; big ones are arithmetic and memory traffic, which it does not
# (and K copies of a big model fall out of cache). Not measured on GPUs, so the same rule holds there.
STACK_WORK_LIMIT = 100_000


def stacking_pays(task: Task, specs: Sequence[RunSpec]) -> bool:
    """Whether ``train_many`` should stack: several configurations of one cell, an optimizer
    affine in lr, and a step small enough that framework overhead dominates it."""
    if len(specs) < 2 or cell_mismatch(specs) or not lr_affine(specs[0].optimizer):
        return False
    params = sum(p.numel() for p in task.make_model(specs[0].seed).parameters())
    return params * specs[0].micro_batch <= STACK_WORK_LIMIT


@dataclass
class _Config:
    """One configuration's bookkeeping while its stack trains."""

    spec: RunSpec
    on_eval: OnEval | None
    rows: list[dict] = field(default_factory=list)
    clock: float = 0.0  # its share of the stack's training time
    last_loss: float = math.nan
    limit: float = math.inf
    steps: int = 0
    diverged: bool = False
    pruned: bool = False
    final: dict[str, torch.Tensor] | None = None  # its parameters when it left the stack

    def result(self, impl: str, stack_size: int) -> RunResult:
        return RunResult(rows=self.rows, diverged=self.diverged, steps=self.steps, train_seconds=self.clock,
                         impl=impl, pruned=self.pruned, stack_size=stack_size)


class StackedRun:
    """The loop of ``train.train`` for a stack: tick segments, per-step divergence, eval rows.

    ``run()`` trains and returns one :class:`RunResult` per spec; afterwards ``final_state(i)``
    is configuration i's parameters when it left the stack (named as in the ordinary model's
    ``state_dict``), for checks and for saving models. Use :func:`train_stacked` to train.
    """

    def __init__(self, task: Task, specs: Sequence[RunSpec], on_eval: Callable[[int, dict], bool] | None = None,
                 method: str = "auto"):
        check_stackable(specs)
        self.spec = specs[0]
        device, dtype = torch.device(self.spec.device), DTYPES[self.spec.dtype]
        self.task = task = task.to(device, dtype)
        # Each slice starts exactly like its single run: the same make_model(seed), cast the same way.
        # One model per distinct seed (an lr sweep needs one): stacking copies the weights anyway.
        made = {seed: task.make_model(seed).to(device, dtype) for seed in dict.fromkeys(s.seed for s in specs)}
        model = stack_models([made[s.seed] for s in specs], method)
        self.template = next(iter(made.values()))  # an ordinary model to load one configuration into
        callbacks = [None if on_eval is None else functools.partial(on_eval, i) for i in range(len(specs))]
        self.configs = [_Config(s, cb) for s, cb in zip(specs, callbacks)]
        self.stack: Stack | None = Stack(model, range(len(specs)), [s.lr for s in specs], self.spec)
        self.impl = self.stack.impl
        self.batches = StackBatches(task, self.spec, [s.seed for s in specs])
        self.loss = stacked_loss(task.loss)
        k = self.spec.accumulation_steps
        self.scale = 1.0 / k if self.spec.accumulation_reduction == "mean" else 1.0  # as in train()
        self.clock = Clock(torch.device(self.spec.device))

    def record(self, positions: Sequence[int], step: int) -> None:
        """Evaluate (not timed) and append a row to the configurations at ``positions``.

        Many rows (an evaluation step): one stacked evaluation of the whole stack. A few rows (a
        divergence, a time-out): each of those configurations alone as an ordinary model, through
        ``train.evaluate`` like its single run, instead of evaluating all K for a few.
        """
        stack, task, splits = self.stack, self.task, eval_splits(self.task, self.spec.eval)
        if 4 * len(positions) < len(stack):
            stats = {pos: [evaluate(unstack(stack.model, pos, self.template), task, split, self.spec.eval.batch)
                           for split in splits] for pos in positions}
        else:
            chunk = max(1, self.spec.eval.batch // len(stack))  # the single run's eval memory, split K ways
            stacked = [evaluate_stacked(stack.model, self.loss, task, split, chunk, len(stack)) for split in splits]
            stats = {pos: [s[pos] for s in stacked] for pos in positions}
        for pos in positions:
            c = self.configs[stack.ids[pos]]
            c.rows.append(eval_row(task, c.spec, step, c.clock, c.last_loss, *stats[pos]))
            c.steps = step

    def drop(self, done: set[int]) -> None:
        """Take finished configurations (by id) out of the stack."""
        if not done:
            return
        for pos, i in enumerate(self.stack.ids):
            if i in done:  # its parameters stop changing here: keep a copy, named as in the ordinary model
                self.configs[i].final = {n: t.detach().clone() for n, t in self.stack.model.config_state(pos).items()}
        kept = [pos for pos, i in enumerate(self.stack.ids) if i not in done]
        self.stack = self.stack.keep(kept) if kept else None
        if kept:
            self.batches.keep([self.configs[i].spec.seed for i in self.stack.ids])

    def advance(self, step: int, stop: int) -> tuple[int, list[int]]:
        """Train until ``stop`` or until some configurations diverge; return the step and their positions."""
        stack, loss_fn, scale, k = self.stack, self.loss, self.scale, self.spec.accumulation_steps
        limits = [self.configs[i].limit for i in stack.ids]
        bad: list[int] = []
        while step < stop and not bad:
            step += 1
            stack.opt.zero_grad(set_to_none=True)
            loss = 0.0
            for x, y, shared in self.batches.next():
                micro = loss_fn(stack.model(x, shared), y, shared)  # (K,): each configuration's batch mean
                total = micro.sum()  # configuration k's gradient is its own loss's gradient
                (total if k == 1 else total * scale).backward()  # k = 1: skip the op, like train()
                loss = micro.detach() if k == 1 else loss + micro.detach()
            stack.step()
            last = [v / k for v in loss.tolist()]  # .tolist() syncs the device: exact per-step divergence check
            bad = [pos for pos, (v, limit) in enumerate(zip(last, limits)) if not v <= limit]  # NaN, inf, exploded
        for pos, i in enumerate(stack.ids):
            self.configs[i].last_loss = last[pos]
        return step, bad

    def segment(self, step: int, stop: int) -> int:
        """Train to ``stop`` (a tick); a configuration that diverges gets its row and leaves at once."""
        while self.stack is not None and step < stop:
            if step >= self.spec.warmup_steps:
                self.clock.start()  # warm-up steps (the first ones) are run but not timed
            before = self.clock.elapsed
            step, bad = self.advance(step, stop)
            self.clock.stop()
            share = (self.clock.elapsed - before) / len(self.stack)
            for i in self.stack.ids:
                self.configs[i].clock += share
            if bad:
                self.record(bad, step)
                for pos in bad:
                    self.configs[self.stack.ids[pos]].diverged = True
                self.drop({self.stack.ids[pos] for pos in bad})
        return step

    def checkpoint(self, step: int, total: int, is_eval: bool) -> None:
        """After a tick: rows where due, then divergence, pruning and time-outs leave the stack."""
        cap = self.spec.max_seconds
        late = {pos for pos, i in enumerate(self.stack.ids) if cap is not None and self.configs[i].clock >= cap}
        due = range(len(self.stack)) if is_eval else sorted(late)
        if not due:
            return
        self.record(due, step)
        done = set()
        for pos in due:
            c = self.configs[self.stack.ids[pos]]
            row = c.rows[-1]
            c.diverged = not row["train_loss"] <= c.limit
            c.pruned = not c.diverged and c.on_eval is not None and step < total and bool(c.on_eval(row))
            if c.diverged or c.pruned or pos in late:
                done.add(self.stack.ids[pos])
        self.drop(done)

    def final_state(self, i: int) -> dict[str, torch.Tensor]:
        if self.configs[i].final is None:
            raise RuntimeError("final_state() is known once run() has returned")
        return self.configs[i].final

    def run(self, progress: bool = False) -> list[RunResult]:
        total, evals, ticks = schedule(self.spec, self.task.n_train)
        self.record(range(len(self.stack)), 0)
        for c in self.configs:
            c.limit = self.spec.divergence_factor * max(c.rows[0]["train_loss"], 1e-12)
            c.diverged = not c.rows[0]["train_loss"] <= c.limit
        self.drop({i for i, c in enumerate(self.configs) if c.diverged})
        step = 0
        bar = tqdm(total=total, disable=not progress, unit="step", dynamic_ncols=True, leave=False)
        for stop in ticks[1:]:
            if self.stack is None:
                break
            step = self.segment(step, stop)
            bar.update(step - bar.n)
            if self.stack is not None:
                self.checkpoint(step, total, step in evals)
            bar.set_postfix(live=len(self.stack) if self.stack else 0, refresh=False)
        bar.close()
        if self.stack is not None:
            self.drop(set(self.stack.ids))
        return [c.result(self.impl, len(self.configs)) for c in self.configs]


def train_stacked(task: Task, specs: Sequence[RunSpec], progress: bool = False,
                  on_eval: Callable[[int, dict], bool] | None = None, method: str = "auto") -> list[RunResult]:
    """Train the configurations of one cell as one stacked model; one result per spec, in order.

    Same contract as :func:`suite.train.train_many`; ``method`` picks the stacked model
    (``auto``, ``layers``, ``vmap``; see :func:`suite.stacked_models.stack_models`).
    """
    check_stackable(specs)
    if len(specs) == 1:  # K = 1 is the ordinary loop, bit for bit
        callback = None if on_eval is None else functools.partial(on_eval, 0)
        return [train(task, specs[0], progress=progress, on_eval=callback)]
    return StackedRun(task, specs, on_eval, method).run(progress)

"""How long a run trains, where it pauses (total steps, evaluation steps, ticks), and its
learning-rate schedule."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR

from suite.types import EvalSpec, LRSchedule, RunSpec


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


def _steps(value: float, total: int) -> int:
    """``value`` steps, or ``value`` × the run's steps when it is a fraction (< 1)."""
    return int(round(value * total)) if 0 < value < 1 else int(value)


def lr_factor(schedule: LRSchedule, total: int) -> Callable[[int], float] | None:
    """The factor applied to each configuration's base lr before step ``t + 1`` (``LambdaLR``'s
    convention: called with the number of steps taken), or None for a constant schedule."""
    warmup = min(_steps(schedule.warmup, total), total)
    if schedule.name == "constant" and warmup == 0:
        return None
    span, every = max(total - warmup, 1), max(_steps(schedule.step_every, total), 1)

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        progress = min((t - warmup) / span, 1.0)
        if schedule.name == "cosine":
            return schedule.final + (1 - schedule.final) * 0.5 * (1 + math.cos(math.pi * progress))
        if schedule.name == "linear":
            return 1 - (1 - schedule.final) * progress
        if schedule.name == "step":
            return schedule.step_gamma ** ((t - warmup) // every)
        return 1.0

    return factor


def start_schedule(opt: torch.optim.Optimizer, factor: Callable[[int], float] | None,
                   steps_done: int = 0) -> LambdaLR | None:
    """``LambdaLR`` with ``factor`` on ``opt`` (None for a constant schedule), ``steps_done`` steps in:
    the optimizer's lr is base × factor(steps_done) for the next step."""
    if factor is None:
        return None
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return LambdaLR(opt, factor, last_epoch=steps_done - 1)


def copy_schedule(scheduler: LambdaLR | None, opt: torch.optim.Optimizer,
                  factor: Callable[[int], float] | None) -> LambdaLR | None:
    """The schedule of a copied optimizer, at the same step (a deep copy of a scheduler would keep
    pointing at step bookkeeping of the original optimizer)."""
    return None if scheduler is None else start_schedule(opt, factor, scheduler.last_epoch)

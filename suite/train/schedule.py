"""How long a run trains and where it pauses: total steps, evaluation steps, ticks."""
from __future__ import annotations

import math

import numpy as np

from suite.types import EvalSpec, RunSpec


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

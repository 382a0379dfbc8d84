"""Where a process's training time goes: wall seconds per phase, exclusive (a phase inside another
counts for itself only), accumulated over the process's life.

* ``steps``: training steps with their divergence checks, warm-up included (the training clock,
  ``time_s``, is the same minus warm-up, shared among a stack);
* ``evaluation``: the evaluation points (the full losses and accuracies, noise scales);
* ``target_replay``: replaying a segment to locate a step to target (``suite.train.loop``);
* ``storage``: storing runs (``suite.store``'s batch commits; read from its own counter, since
  the store imports nothing of training).

A study adds up each cell's :func:`delta` (``suite.study``) and writes the split into
``environment.json``, where the report states it.
"""
from __future__ import annotations

import functools
import time
from typing import Callable

PHASES = ("steps", "evaluation", "target_replay")
_totals = dict.fromkeys(PHASES, 0.0)
_stack: list[list[float]] = []  # per open phase: [start, seconds spent in phases inside it]


def timed_phase(name: str) -> Callable:
    """Decorate a function whose calls count as phase ``name``."""
    def wrap(function: Callable) -> Callable:
        @functools.wraps(function)
        def timed(*args, **kwargs):
            _stack.append([time.perf_counter(), 0.0])
            try:
                return function(*args, **kwargs)
            finally:
                began, inner = _stack.pop()
                spent = time.perf_counter() - began
                _totals[name] += spent - inner
                if _stack:
                    _stack[-1][1] += spent
        return timed
    return wrap


def totals() -> dict[str, float]:
    """Seconds per phase so far in this process, storage included."""
    from suite.store.runs import storage_seconds

    return {**_totals, "storage": storage_seconds()}


def delta(before: dict[str, float]) -> dict[str, float]:
    """Seconds per phase since ``before`` (a :func:`totals`)."""
    now = totals()
    return {name: round(now[name] - before.get(name, 0.0), 3) for name in now}

"""How many torch threads a run uses: ``threads=auto`` (the default) or an explicit count.

A second intra-op thread only pays when a step's operations are big enough to split: on the tiny
tasks and at small batch sizes a step is framework overhead, a second thread has nothing to do,
and when another process keeps a core busy every op waits for it (a batch-1 step measured many
times slower at 2 threads than at 1). ``auto`` therefore gives one thread to a step whose work
(:func:`step_work`: the model's forward FLOPs for one sample × the micro-batch) is below
:data:`AUTO_WORK_CUTOVER`, and all available threads above it, where the arithmetic dominates and
splits well. Available: the cores this process may run on (``os.sched_getaffinity``: a SLURM
job's ``cpus_per_task``), at most ``OMP_NUM_THREADS`` when the user set it (respected as a
ceiling; an explicit ``threads=N`` overrides it). On a GPU the host thread only launches kernels:
``auto`` is 1. The count used is recorded in every row (``threads``).
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from suite.types import ConfigError, RunSpec, Task, usable_cores

# Forward FLOPs per step (one sample's × micro-batch) from which a run gets every core. Measured
# with scripts/bench_threads.py (2-core CPU, torch 2.13, Adam, 1 vs 2 threads interleaved, on a
# loaded machine): two threads lost at every step up to 4.8e8 FLOPs (Fashion-MNIST MLP b1024,
# 4.5x slower); the README's "Threads" section has the table.
AUTO_WORK_CUTOVER = 1_000_000_000


def check_threads(value: Any) -> int | str | None:
    """``auto``, a positive integer, or null (torch's own default); anything else is a ConfigError."""
    if value is None or value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ConfigError(f"threads={value!r} is not valid: give threads=auto (the default: 1 for small steps, "
                      f"all available cores for big ones) or a positive integer, e.g. threads=1.")


def available_threads() -> int:
    """The cores this process may use, at most ``OMP_NUM_THREADS`` where the user set it."""
    cores = usable_cores()
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cores, int(omp))) if omp.isdigit() and int(omp) > 0 else max(1, cores)


def step_work(task: Task, spec: RunSpec) -> int:
    """A step's work: the model's forward FLOPs (matrix products and convolutions) for one
    training sample, times the micro-batch. Counted on a one-sample forward pass, not timed."""
    model = task.make_model(spec.seed)
    sample = task.train.x[:1].to(dtype=next(model.parameters()).dtype, device="cpu")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(sample)
    return int(counter.get_total_flops()) * spec.micro_batch


def auto_threads(task: Task, spec: RunSpec) -> int:
    """``threads=auto``'s choice for this run (see the module doc)."""
    if torch.device(spec.device).type != "cpu":
        return 1
    available = available_threads()
    return 1 if available == 1 or step_work(task, spec) < AUTO_WORK_CUTOVER else available


def use_threads(setting: Any, task: Task, spec: RunSpec) -> int:
    """Set torch's intra-op threads for this run from ``setting`` (auto, N or null); return the count."""
    setting = check_threads(setting)
    if setting is not None:
        torch.set_num_threads(auto_threads(task, spec) if setting == "auto" else setting)
    return torch.get_num_threads()


def capped_threads(setting: Any, cores: int) -> int | str | None:
    """``setting`` for a worker given ``cores`` of the machine: an explicit count is cut to it (null:
    ``cores``); ``auto`` stays auto, its ceiling set by :func:`limit_cores` in that worker."""
    setting = check_threads(setting)
    if setting == "auto":
        return 1 if cores == 1 else "auto"
    return min(setting or cores, cores)


def limit_cores(cores: int) -> None:
    """In a worker process given ``cores`` of the machine: the ceiling of ``auto`` (``OMP_NUM_THREADS``)."""
    os.environ["OMP_NUM_THREADS"] = str(min(cores, int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or cores))

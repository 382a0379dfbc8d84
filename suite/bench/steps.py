"""Measurements for the benchmarks (``tests/benchmarks/``): steps to time, state bytes, peak memory.

The timed training step is the training loop's own, built by the engine a run uses
(:class:`suite.train.single.SingleEngine`), so a benchmark times exactly what a run's clock times.

Memory, in bytes:

* **optimizer state** - :func:`suite.optim.measure.state_bytes` (the conformance check uses it too).
* **peak of a training step** - the most bytes the step holds above what was live before it
  (parameters, optimizer state and data are live before; activations, gradients and temporaries
  are the step's). CUDA: ``max_memory_allocated``. CPU: torch's own allocator events, recorded
  by ``torch.profiler`` with ``profile_memory=True`` and summed in time order - the CPU analogue
  of ``max_memory_allocated``. tracemalloc cannot see these allocations (torch does not allocate
  through Python), and RSS mixes in malloc's caching and whatever else the process holds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping

import torch
from torch import nn
from torch.autograd import DeviceType

from suite.optim.registry import OPTIMIZERS, get_spec
from suite.tasks import TASKS
from suite.train.device import resolve_device
from suite.train.single import SingleEngine
from suite.types import ConfigError, RunSpec, Task


@dataclass
class StepSetup:
    """A ready training step (the loop's own) and what a benchmark records about it."""

    step: Callable[[], float]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    impl: str
    task: Task  # on the step's device
    device: torch.device


def training_step(task: Task, spec: RunSpec) -> StepSetup:
    """The step a single run of ``spec`` repeats, ready to call: the engine's own step (built as a
    run builds it, :class:`suite.train.single.SingleEngine`), and its loss read back as the loop
    does on the CPU after every step (``.item()``, which also syncs a GPU)."""
    engine = SingleEngine(task, spec)
    step = engine.step
    return StepSetup(lambda: step().item(), engine.model, engine.opt, engine.impl, engine.task,
                     torch.device(spec.device))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_step_bytes(setup: StepSetup) -> int:
    """Most bytes one call of ``setup.step`` holds above the bytes live before it."""
    setup.step()  # optimizer state exists from here on: it is live before, not the step's
    setup.optimizer.zero_grad(set_to_none=True)  # gradients are the step's to allocate
    return _PEAK[setup.device.type](setup.step, setup.device)


def _peak_cuda(step: Callable[[], float], device: torch.device) -> int:
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def _peak_cpu(step: Callable[[], float], device: torch.device) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Allocator events carry signed sizes (+alloc, -free), so their running sum is the live bytes
    # above the start. A free of a block allocated before the profiler started has no known size
    # and is absent: peak_step_bytes frees the old gradients first so the step frees only its own.
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


_PEAK: dict[str, Callable[[Callable[[], float], torch.device], int]] = {"cpu": _peak_cpu, "cuda": _peak_cuda}


def samples_per_s(batch_size: int, seconds_per_step: float) -> float:
    return batch_size / seconds_per_step if seconds_per_step > 0 else math.nan


# --- the benchmark grid (tests/benchmarks/): which cells to time, chosen by environment variables ---

@dataclass(frozen=True)
class BenchCase:
    """One benchmark: a training step (``kind`` train-step / accumulation) or an optimizer step."""

    kind: str
    task: str
    model: str | None  # a task's model option (``cnn``), None for the task's default
    optimizer: str
    batch_size: int | str = 1  # int or "full"
    accumulation_steps: int = 1
    impl: str = "auto"

    @property
    def task_options(self) -> dict:
        return {"name": self.task, **({"model": self.model} if self.model else {})}

    @property
    def id(self) -> str:
        where = self.task + (f"-{self.model}" if self.model else "")
        if self.kind == "opt-step":
            return f"{where}-{self.optimizer}-{self.impl}"
        acc = f"x{self.accumulation_steps}" if self.accumulation_steps > 1 else ""
        return f"{where}-{self.optimizer}-b{self.batch_size}{acc}"


@dataclass(frozen=True)
class Grid:
    name: str
    train: dict[str, tuple[int | str, ...]]  # task -> batch sizes for the train-step group
    optimizers: tuple[str, ...]
    accumulation: tuple[tuple[str, int, tuple[int, ...]], ...]  # (task, batch size, accumulation steps)
    accumulation_optimizer: str
    opt_models: tuple[str, ...]  # "task" or "task:model" whose parameters the opt-step group updates
    impls: tuple[str, ...]
    warmup_rounds: int
    rounds: int
    round_seconds: float  # iterations per round are calibrated so one round lasts about this long
    max_seconds: float  # slow steps get fewer rounds (at least 3) so one benchmark stays near this
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None: torch's default

    def train_cells(self) -> list[BenchCase]:
        return [BenchCase("train-step", t, None, o, b) for t, bs in self.train.items() for o in self.optimizers
                for b in bs if b == "full" or not get_spec(o).full_batch_only]

    def accumulation_cells(self) -> list[BenchCase]:
        """Each batch with every accumulation count, and each micro-batch alone (k = 1)."""
        cells = []
        for task, batch, ks in self.accumulation:
            for k in ks:
                cells.append(BenchCase("accumulation", task, None, self.accumulation_optimizer, batch, k))
                if k > 1:
                    cells.append(BenchCase("accumulation", task, None, self.accumulation_optimizer, batch // k, 1))
        return list(dict.fromkeys(cells))

    def opt_cells(self) -> list[BenchCase]:
        return [BenchCase("opt-step", m.split(":")[0], m.partition(":")[2] or None, o, impl=i)
                for m in self.opt_models for o in self.optimizers for i in self.impls
                if (i != "fused" or get_spec(o).fused) and (i != "foreach" or get_spec(o).foreach)]


GRIDS = {
    # CI: a few cells of each group, so every benchmark runs in well under a minute; one thread,
    # because a second intra-op thread on a busy shared machine waits for a core (slow, erratic).
    "fast": Grid("fast", train={"tiny_mlp": (1, 32), "fashion_mnist": (128,)}, optimizers=("sgd", "adam"),
                 accumulation=(("fashion_mnist", 512, (1, 8)),), accumulation_optimizer="sgd",
                 opt_models=("tiny_mlp", "fashion_mnist"), impls=("forloop", "foreach", "fused"),
                 warmup_rounds=1, rounds=3, round_seconds=0.002, max_seconds=0.05, threads=1),
    # make bench: every optimizer at batch sizes from 1 to full.
    "full": Grid("full", train={"regression": (1, 32, "full"), "tiny_mlp": (1, 32, "full"),
                                "fashion_mnist": (1, 16, 128, 1024, "full")},
                 optimizers=tuple(OPTIMIZERS), accumulation=(("fashion_mnist", 4096, (1, 4, 16, 64)),),
                 accumulation_optimizer="sgd", opt_models=("tiny_mlp", "fashion_mnist", "fashion_mnist:cnn"),
                 impls=("forloop", "foreach", "fused"), warmup_rounds=2, rounds=10, round_seconds=0.05,
                 max_seconds=3.0),
}
ENV = {
    "OPTSUITE_BENCH": "grid: fast | full (default full)",
    "OPTSUITE_BENCH_TASKS": "comma-separated tasks to keep, e.g. tiny_mlp,fashion_mnist",
    "OPTSUITE_BENCH_OPTIMIZERS": "comma-separated optimizers, e.g. sgd,adam",
    "OPTSUITE_BENCH_BATCHES": "comma-separated batch sizes for the train-step group, e.g. 1,32,full",
    "OPTSUITE_BENCH_DEVICE": "auto | cpu | cuda | cuda:N (default auto)",
    "OPTSUITE_BENCH_THREADS": "torch intra-op threads, a positive integer (default: torch's choice)",
}


def _env_error(var: str, value: str, valid) -> ConfigError:
    return ConfigError(f"{var}={value!r} is invalid; valid: {', '.join(map(str, valid))}. "
                       f"({var}: {ENV[var]}.) Unset it or fix it, e.g. {var}={next(iter(valid))}.")


def _names(env: Mapping[str, str], var: str, valid) -> list[str] | None:
    if not env.get(var):
        return None
    names = [s.strip() for s in env[var].split(",") if s.strip()]
    if not names or any(n not in valid for n in names):
        raise _env_error(var, env[var], valid)
    return names


def _batches(value: str) -> tuple[int | str, ...]:
    items = [s.strip() for s in value.split(",") if s.strip()]
    if not items or not all(s == "full" or (s.isdigit() and int(s) > 0) for s in items):
        raise _env_error("OPTSUITE_BENCH_BATCHES", value, ["1,32,full", "positive integers or full"])
    return tuple(s if s == "full" else int(s) for s in items)


def grid_from_env(env: Mapping[str, str]) -> Grid:
    """The grid named by ``OPTSUITE_BENCH`` narrowed by the other ``OPTSUITE_BENCH_*`` variables."""
    name = env.get("OPTSUITE_BENCH") or "full"
    if name not in GRIDS:
        raise _env_error("OPTSUITE_BENCH", name, GRIDS)
    g = GRIDS[name]
    tasks = _names(env, "OPTSUITE_BENCH_TASKS", TASKS)
    optimizers = _names(env, "OPTSUITE_BENCH_OPTIMIZERS", OPTIMIZERS) or list(g.optimizers)
    keep = (lambda t: t.split(":")[0] in tasks) if tasks else (lambda t: True)
    train = {t: bs for t, bs in g.train.items() if keep(t)}
    if tasks:  # a task outside the preset's train grid gets the preset's first task's batch sizes
        train.update({t: next(iter(g.train.values())) for t in tasks if t not in train})
    if env.get("OPTSUITE_BENCH_BATCHES"):
        train = {t: _batches(env["OPTSUITE_BENCH_BATCHES"]) for t in train}
    device = env.get("OPTSUITE_BENCH_DEVICE") or "auto"
    try:
        device = resolve_device(device)
    except ConfigError as e:
        raise ConfigError(f"OPTSUITE_BENCH_DEVICE: {e}") from None
    threads = env.get("OPTSUITE_BENCH_THREADS") or None
    if threads is not None and not (threads.isdigit() and int(threads) > 0):
        raise _env_error("OPTSUITE_BENCH_THREADS", threads, [1, 2, 4])
    return replace(g, train=train, optimizers=tuple(optimizers), device=device,
                   threads=int(threads) if threads else g.threads,
                   accumulation=tuple(a for a in g.accumulation if keep(a[0])),
                   opt_models=tuple(m for m in g.opt_models if keep(m)))

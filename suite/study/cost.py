"""A study's wall time, predicted before it runs (``suite-study study=<preset> study.estimate=true``).

The cost model counts every run the preset asks for, per protocol part, task and batch size:
tuning trials (``n_trials`` + ``refine`` + ``resolve``, the most bisection trials; each at every
tuning seed, trained in stacks of ``tune_batch`` × seeds where stacking pays, else one after
another) and final runs (every final seed, stacked where it pays), each with its steps (the
target part's step cap; the budget part's epochs × steps per epoch) and its evaluations. It then times, on this machine and under its present
load, a short run of each (task, batch size, stack) it needs: the seconds per step and per
evaluation and the seconds to store a run. The prediction is Σ runs × (steps × per-step + evaluations × per-evaluation + storing),
divided by ``study.workers`` (cells run in parallel, one thread each).

It is an upper bound on the tuning: a target-part trial stops at its target, and the pruner stops
trials early in both parts, while the model charges every trial its whole cap or budget; widening
(more trials where an optimum sits at the edge of its range) is not predicted. The extras and the
report are not counted (minutes at most).
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections import Counter
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from suite.run.execute import store_run
from suite.run.prepare import prepare
from suite.store.runs import RunStore
from suite.study.cell import Job
from suite.study.presets import expand, validate
from suite.study.runner import jobs_of
from suite.train.device import set_threads
from suite.train.schedule import eval_steps
from suite.train.stacked import stacking_pays, train_many
from suite.types import EvalSpec

TIMED_STEPS = 50  # steps of each timing run
EXTRA_EVALS = 8  # evaluations the second timing run adds


@dataclasses.dataclass(frozen=True)
class Work:
    """Runs of one kind: ``count`` runs of ``steps`` steps and ``evals`` evaluations each, trained
    ``stack`` at a time."""

    part: str
    task: str
    batch: str
    kind: str  # tuning | final
    stack: int
    steps: int
    evals: int


def _steps_and_evals(cfg: DictConfig, n: int) -> tuple[int, int]:
    budget, batch = cfg.budget, n if cfg.batch_size == "full" else int(cfg.batch_size)
    steps = math.ceil(budget.epochs * n / batch - 1e-9)
    steps = min(steps, budget.max_steps) if budget.max_steps is not None else steps
    ev = {k: v for k, v in OmegaConf.to_container(cfg.eval).items() if k in {f.name for f in dataclasses.fields(EvalSpec)}}
    return steps, len(eval_steps(EvalSpec(**ev), steps, n, batch))


def _stack(task, cfg: DictConfig, k: int, known: dict) -> int:
    """How many of ``k`` runs of this cell train together (1: one after another); ``known`` keeps the
    answers by (task, optimizer, batch size, accumulation, k): preparing a run builds its task."""
    key = (cfg.task.name, cfg.optimizer.name, str(cfg.batch_size), cfg.accumulation_steps, k)
    if key not in known:
        spec = prepare(OmegaConf.merge(cfg, {"lr": 0.01})).spec
        known[key] = k if stacking_pays(task, [dataclasses.replace(spec, seed=s) for s in range(k)]) else 1
    return known[key]


def plan(cfg: DictConfig, jobs: list[Job], sizes: dict[str, int], tasks: dict) -> Counter:
    """Every run the study asks for, as :class:`Work` -> number of runs."""
    work: Counter = Counter()
    tuned: list[dict] = []
    known: dict = {}
    for job in jobs:
        final = OmegaConf.create(job.config)
        part, task = "target" if final.get("target") else "budget", final.task.name  # as the report names parts
        steps, evals = _steps_and_evals(final, sizes[task])
        batch = str(final.batch_size)
        work[Work(part, task, batch, "final", _stack(tasks[task], final, len(job.seeds), known), steps, evals)] += len(job.seeds)
        if job.tuning is None or job.tuning in tuned:
            continue
        tuned.append(job.tuning)
        tuning = OmegaConf.create(job.tuning)
        seeds = len(tuning.tune.seeds or [0])
        trials = int(tuning.tune.n_trials) + sum(int(tuning.tune.get(k) or 0) for k in ("refine", "resolve"))
        stack = _stack(tasks[task], tuning, int(tuning.tune.batch) * seeds, known)
        steps, evals = _steps_and_evals(tuning, sizes[task])
        work[Work(part, task, batch, "tuning", stack, steps, evals)] += trials * seeds
    return work


def _timed(task, specs: list) -> tuple[float, float, list]:
    """Wall seconds, the loop's clock (it stops at evaluations) and the results of training ``specs``."""
    started = time.perf_counter()
    results = train_many(task, specs)
    return time.perf_counter() - started, sum(r.train_seconds for r in results), results


def measure(job_config: DictConfig, stack: int) -> tuple[float, float, float]:
    """Seconds per step and per evaluation of a stack of ``stack`` runs of this cell, and seconds to
    store one run: the steps from the loop's clock (a stacked run's time is its share of it), the
    evaluations from two runs with different numbers of them (the set-up cancels)."""
    prepared = prepare(OmegaConf.merge(job_config, {"lr": 1e-3, "target": None}))
    task, spec = prepared.task, prepared.spec
    runs = [[dataclasses.replace(spec, seed=s, max_steps=TIMED_STEPS, epochs=1e9, eval=dataclasses.replace(
        spec.eval, points=points, schedule="linear", every_steps=None, every_epochs=None)) for s in range(stack)]
        for points in (2, 2 + EXTRA_EVALS)]
    train_many(task, runs[0][:1])  # warm: first-call costs (allocation, kernels) are not a step's
    (few_wall, clock, results), (many_wall, _, _) = _timed(task, runs[0]), _timed(task, runs[1])
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        store_run(RunStore(folder), spec, task, prepared.config, results[0])
        storing = time.perf_counter() - started
    return clock / TIMED_STEPS, max(many_wall - few_wall, 0.0) / EXTRA_EVALS, storing


def estimate(cfg: DictConfig, echo: Callable[[str], None] = print) -> dict[str, float]:
    """Print the predicted wall time of the study per part, task and kind of run; return the seconds per
    part on an idle machine."""
    study = cfg.study
    sizes = validate(study)
    cells = expand(study, sizes)
    jobs = jobs_of(cfg, cells)
    set_threads(1)
    example = {}
    for job in jobs:
        c = OmegaConf.create(job.config)
        example.setdefault((c.task.name, str(c.batch_size)), c)
    tasks = {task: prepare(OmegaConf.merge(c, {"lr": 0.01})).task for (task, _), c in example.items()}
    work = plan(cfg, jobs, sizes, tasks)
    costs, loads = {}, [os.getloadavg()[0]]
    parts: Counter = Counter()
    echo(f"cost model of study {study.name} ({study.workers} worker(s); timed now, under this machine's present load):")
    echo(f"{'part':7} {'task':14} {'batch':>6} {'kind':7} {'runs':>6} {'stack':>5} {'steps':>6} {'evals':>5} "
         f"{'s/step':>8} {'s/eval':>7} {'core-s':>8}")
    for w, count in sorted(work.items(), key=lambda kv: (kv[0].part, kv[0].task, kv[0].batch, kv[0].kind)):
        key = (w.task, w.batch, w.stack)
        if key not in costs:
            costs[key] = measure(example[(w.task, w.batch)], w.stack)
            loads.append(os.getloadavg()[0])
        per_step, per_eval, storing = costs[key]
        seconds = count / w.stack * (w.steps * per_step + w.evals * per_eval) + count * storing
        parts[w.part] += seconds
        echo(f"{w.part:7} {w.task:14} {w.batch:>6} {w.kind:7} {count:>6} {w.stack:>5} {w.steps:>6} {w.evals:>5} "
             f"{per_step:>8.2g} {per_eval:>7.2g} {seconds:>8.0f}")
    workers, idle = int(study.workers), idle_share(loads)
    for part, seconds in parts.items():
        echo(f"part {part}: {seconds:,.0f} core-seconds -> about {seconds / workers / 60:,.0f} min on {workers} "
             f"worker(s) as timed, {seconds * idle / workers / 60:,.0f} min on an idle machine")
    total = sum(parts.values()) / workers
    echo(f"study {study.name}: about {total / 60:,.0f} min ({total / 3600:.1f} h) of wall time as timed, under a load "
         f"average of {sum(loads) / len(loads):.1f} on {os.cpu_count()} core(s); about {total * idle / 60:,.0f} min "
         f"({total * idle / 3600:.1f} h) on an idle machine (x {idle:.2f}, the share of a core the timing runs had). "
         f"An upper bound on the tuning (trials charged their whole cap or budget); extras and report not counted.")
    return {part: seconds * idle / workers for part, seconds in parts.items()}


def idle_share(loads: list[float]) -> float:
    """The share of a core a process had under these load averages (1 where the cores were not all busy):
    a timing taken under load, times this, is what the machine gives the study's workers alone."""
    cores = os.cpu_count() or 1
    return min(1.0, cores / max(sum(loads) / len(loads), 1e-9))

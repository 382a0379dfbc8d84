"""Throughput and memory of training steps and optimizer steps (pytest-benchmark, pedantic mode).

Groups (one table each in pytest-benchmark's output and in ``suite.benchjson``):

* ``train-step <task>``: one step of the training loop (``suite.train.make_step``: next batch,
  forward, backward, optimizer step, ``.item()``) per optimizer × batch size, with the fastest
  implementation torch offers (``impl=auto``);
* ``accumulation <task>``: a batch as ``k`` accumulated micro-batches, and each micro-batch alone:
  time per update and peak memory of the step - the accumulation trade-off in numbers;
* ``opt-step <model>``: ``optimizer.step()`` alone on fixed gradients, per optimizer and
  implementation (forloop / foreach / fused): the state-update cost and what ``fused`` buys.

Every benchmark records in ``extra_info``: the cell, the implementation that ran, device,
threads, versions, ``samples_per_s`` (training steps), parameter and optimizer-state bytes,
and the peak bytes of a training step (``suite.bench`` documents how each is measured).
"""
from __future__ import annotations

import torch

from suite.bench.steps import BenchCase, peak_step_bytes, training_step
from suite.optim.measure import n_params, optimizer_step, param_bytes, state_bytes
from suite.optim.registry import get_spec
from suite.run.prepare import resolve_batch_size
from suite.types import EvalSpec, RunSpec, Task


def step_spec(task: Task, cell: BenchCase, device: str) -> RunSpec:
    batch = resolve_batch_size(cell.batch_size, task.n_train)
    return RunSpec(task=task.name, optimizer=cell.optimizer, hparams={}, lr=get_spec(cell.optimizer).lr_default,
                   batch_size=batch, accumulation_steps=cell.accumulation_steps,
                   eval=EvalSpec(points=2), impl=cell.impl, device=device)


def memory_info(setup, spec: RunSpec) -> dict:
    """Bytes the step holds at its peak, and what lives across steps (parameters, state)."""
    peak, state = peak_step_bytes(setup), state_bytes(setup.optimizer)
    return {"peak_bytes": peak, "peak_bytes_per_sample": peak / spec.batch_size, **state,
            "param_bytes": param_bytes(setup.model), "n_params": n_params(setup.model),
            "state_bytes_per_param": state["state_bytes"] / n_params(setup.model)}


def time_training_step(run_benchmark, task: Task, cell: BenchCase, device: str) -> None:
    spec = step_spec(task, cell, device)
    setup = training_step(task, spec)
    info = memory_info(setup, spec)
    run_benchmark(setup.step, setup.device, batch_size=spec.batch_size, kind=cell.kind, task=task.name,
                  model=task.model_name, optimizer=cell.optimizer, impl=setup.impl,
                  accumulation_steps=spec.accumulation_steps, micro_batch=spec.micro_batch,
                  n_train=task.n_train, **info)


def test_train_step(benchmark, run_benchmark, get_task, grid, train_cell):
    benchmark.group = f"train-step {train_cell.task}"
    time_training_step(run_benchmark, get_task(train_cell), train_cell, grid.device)


def test_accumulation(benchmark, run_benchmark, get_task, grid, accumulation_cell):
    cell = accumulation_cell
    benchmark.group = f"accumulation {cell.task}"
    time_training_step(run_benchmark, get_task(cell), cell, grid.device)


def test_optimizer_step(benchmark, run_benchmark, get_task, grid, opt_cell):
    task = get_task(opt_cell)
    benchmark.group = f"opt-step {task.model_name}"
    model = task.make_model(0).to(grid.device)
    device = torch.device(grid.device)
    step, opt, impl = optimizer_step(model, opt_cell.optimizer, opt_cell.impl, device)
    step()  # optimizers allocate their state on the first step
    sizes = {"n_params": n_params(model), "param_bytes": param_bytes(model), **state_bytes(opt)}
    run_benchmark(step, device, kind="opt-step", task=task.name, model=task.model_name,
                  optimizer=opt_cell.optimizer, impl=impl, **sizes,
                  state_bytes_per_param=sizes["state_bytes"] / sizes["n_params"])

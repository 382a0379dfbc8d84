"""Gradient accumulation through the real training loop.

``accumulation_steps=k`` splits each batch of ``k·m`` samples into ``k`` micro-batches; with the
default ``mean`` reduction the accumulated gradient, and so the parameters after the step, equal
those of one batch of ``k·m`` (to 1e-6). ``sum`` (tutorial 004's variant) accumulates ``k`` times
the gradient. The model is captured from ``train`` by wrapping ``task.make_model``; after a run
its ``.grad`` holds the last step's accumulated gradient (the loop clears it only before a step).
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from suite.optim.registry import resolve_hparams
from suite.tasks import build_task
from suite.train import train
from suite.types import EvalSpec, RunSpec

TOL = 1e-6  # the equivalence tolerance; in float64 the runs agree to ~1e-15


@pytest.fixture
def tasks(fake_mnist_options):
    return {
        "regression": build_task({"name": "regression", "n": 200, "n_val": 10, "n_test": 10, "dim": 3}),
        "tiny_mlp": build_task({"name": "tiny_mlp", "n": 200, "n_val": 10, "n_test": 10}),
        "mnist": build_task({**fake_mnist_options, "hidden": [16]}),
    }


def run_capture(task, optimizer="sgd", **kw):
    """Train with ``train`` and return (result, the trained model)."""
    models = []

    def make_model(seed):
        models.append(task.make_model(seed))
        return models[-1]

    spec = RunSpec(**{"task": task.name, "optimizer": optimizer, "hparams": resolve_hparams(optimizer, {}),
                      "lr": 0.05, "batch_size": 32, "epochs": 100.0, "max_steps": 3, "warmup_steps": 0,
                      "eval": EvalSpec(every_steps=1), **kw})
    result = train(dataclasses.replace(task, make_model=make_model), spec)
    return result, models[0]


def grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def assert_close(a, b, tol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=0, atol=tol), (x - y).abs().max().item()


CASES = [  # (task, optimizer, sampling, batch size): every batch-selection path of the loop
    ("regression", "sgd", "shuffle", 32), ("regression", "adam", "sequential", 48),
    ("tiny_mlp", "sgd", "replacement", 32), ("tiny_mlp", "momentum", "sequential", "full"),
    ("mnist", "sgd", "shuffle", 32), ("mnist", "adam", "sequential", 48), ("mnist", "sgd", "sequential", "full"),
]


@pytest.mark.parametrize("task_name,optimizer,sampling,batch_size", CASES)
def test_mean_accumulation_equals_big_batch(tasks, task_name, optimizer, sampling, batch_size):
    task = tasks[task_name]
    b = task.n_train if batch_size == "full" else batch_size
    common = dict(optimizer=optimizer, batch_size=b, sampling=sampling, dtype="float64")
    big, big_model = run_capture(task, **common)
    acc, acc_model = run_capture(task, accumulation_steps=4, **common)
    assert_close(grads(acc_model), grads(big_model), TOL)
    assert_close(params(acc_model), params(big_model), TOL)
    for r1, r2 in zip(big.rows, acc.rows, strict=True):
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], abs=TOL)
        assert r1["minibatch_loss"] == pytest.approx(r2["minibatch_loss"], abs=TOL, nan_ok=True)


def test_float32_accumulation_matches_to_rounding(tasks):
    """In float32 only the summation order differs: equal to float32 rounding (relative 1e-5)."""
    task = tasks["mnist"]
    _, big = run_capture(task, batch_size=32)
    _, acc = run_capture(task, batch_size=32, accumulation_steps=8)
    for x, y in zip(params(big) + grads(big), params(acc) + grads(acc)):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("task_name", ["regression", "tiny_mlp", "mnist"])
def test_accumulated_gradient_is_the_big_batch_gradient(tasks, task_name):
    """Independent of the loop: one step on samples 0..31 (sequential) has ∇ of their mean loss."""
    task = tasks[task_name]
    _, model = run_capture(task, accumulation_steps=4, sampling="sequential", max_steps=1, dtype="float64")
    reference = task.make_model(0).to(torch.float64)
    x, y = task.train.x[:32].to(torch.float64), task.train.y[:32]
    y = y.to(torch.float64) if y.is_floating_point() else y
    task.loss(reference(x), y).backward()
    assert_close(grads(model), [p.grad for p in reference.parameters()], 1e-10)
    # and the step is θ -= lr·g with that gradient (plain SGD)
    assert_close(params(model), [p.detach() - 0.05 * p.grad for p in reference.parameters()], 1e-10)


@pytest.mark.parametrize("k", [2, 4, 8])
@pytest.mark.parametrize("task_name", ["regression", "mnist"])
def test_sum_reduction_is_k_times_the_gradient(tasks, task_name, k):
    task = tasks[task_name]
    common = dict(batch_size=32, accumulation_steps=k, max_steps=1, dtype="float64")
    _, mean_model = run_capture(task, **common)
    _, sum_model = run_capture(task, accumulation_reduction="sum", **common)
    assert_close(grads(sum_model), [k * g for g in grads(mean_model)], 1e-10)
    init = [p.to(torch.float64) for p in params(task.make_model(0))]
    # plain SGD: the sum variant takes a k times longer step from the same start
    for p0, pm, ps in zip(init, params(mean_model), params(sum_model)):
        assert torch.allclose(ps - p0, k * (pm - p0), rtol=0, atol=1e-10)


def test_micro_batch_is_batch_over_k():
    spec = RunSpec(task="regression", optimizer="sgd", hparams={}, lr=0.1, batch_size=48, accumulation_steps=6)
    assert spec.micro_batch == 8

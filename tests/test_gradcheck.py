"""Autograd gradients of each task's loss agree with central finite differences (float64), for
every small instance every task registry entry lists (``TaskEntry.examples``): a new task is
checked with no test edit.

``torch.autograd.gradcheck`` perturbs the parameters by ±eps and compares the central
difference with the backward pass. Image models read small IDX files the tests write and a few
random inputs; ReLU/max-pool kinks are avoided with probability one by continuous random inputs.
"""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from suite.tasks import TASKS, build_task

CASES = [(name, i) for name, entry in TASKS.items() for i in range(len(entry.examples))]


def test_every_task_lists_small_instances():
    assert all(TASKS[name].examples for name in TASKS), "give every task entry at least one example instance"


@pytest.mark.parametrize("name,i", CASES)
def test_autograd_matches_finite_differences(name, i, fake_mnist_dir):
    options = {"name": name, **TASKS[name].examples[i]}
    if TASKS[name].dataset:
        options["data_dir"] = str(fake_mnist_dir)  # the model and loss are under test, not the data
    task = build_task(options)
    model = task.make_model(0).to(torch.float64)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(task.n_train, generator=gen)[:4]
    x = task.train.x[idx].to(torch.float64)
    if task.classifier:  # continuous random inputs keep ReLU/max-pool away from their kinks
        x = x + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    y = task.train.y[idx]
    y = y.to(torch.float64) if y.is_floating_point() else y
    names = [n for n, _ in model.named_parameters()]
    start = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def loss(*params):
        return task.loss(functional_call(model, dict(zip(names, params)), (x,)), y)

    # Element-wise for the small models; for the image models (thousands of weights) gradcheck's
    # fast mode compares central differences along random directions with the backward pass.
    fast = sum(p.numel() for p in start) > 500
    assert torch.autograd.gradcheck(loss, start, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast)

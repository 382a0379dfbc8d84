"""Autograd gradients of each task's loss agree with central finite differences (float64).

``torch.autograd.gradcheck`` perturbs the parameters by ±eps and compares the central
difference with the backward pass. Image models use small widths (task options) and a few
random inputs so the check stays fast; ReLU/max-pool kinks are avoided with probability one
by continuous random inputs.
"""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from suite.tasks import TASKS, build_task

SMALL = {"val_size": 20, "hidden": [6, 5], "cnn_channels": [2, 3], "cnn_dense": 8}
CASES = {  # id -> task options (the image tasks read the fake files via data_dir)
    "regression": {"name": "regression", "n": 16, "n_val": 4, "n_test": 4},
    "regression-dim4": {"name": "regression", "n": 16, "n_val": 4, "n_test": 4, "dim": 4, "condition_number": 50.0},
    "tiny_mlp": {"name": "tiny_mlp", "n": 16, "n_val": 4, "n_test": 4},
    "tiny_mlp-cubic": {"name": "tiny_mlp", "n": 16, "n_val": 4, "n_test": 4, "target": "cubic", "hidden": 4},
    "fashion_mnist-mlp": {"name": "fashion_mnist", **SMALL, "model": "mlp"},
    "fashion_mnist-cnn": {"name": "fashion_mnist", **SMALL, "model": "cnn"},
    "mnist-mlp": {"name": "mnist", **SMALL, "model": "mlp"},
    "mnist-cnn": {"name": "mnist", **SMALL, "model": "cnn", "normalize": True},
}


def test_every_task_has_a_case():
    covered = {options["name"] for options in CASES.values()}
    assert covered == set(TASKS), f"add gradcheck cases for {sorted(set(TASKS) - covered)}"


@pytest.mark.parametrize("case", CASES)
def test_autograd_matches_finite_differences(case, fake_mnist_dir):
    options = dict(CASES[case])
    if options["name"] in ("fashion_mnist", "mnist"):
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

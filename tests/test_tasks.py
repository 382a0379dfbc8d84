"""The synthetic tasks and the task registry: tutorial defaults, independent splits, the known optimum.
(Every task's contract, over the registry: tests/test_task_contract.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from suite.tasks import TASKS, build_task
from suite.types import ConfigError, Task


def regression(**options) -> Task:
    return build_task({"name": "regression", **options})


def test_regression_tutorial_defaults():
    task = regression()
    assert (task.n_train, len(task.val), len(task.test)) == (1000, 1000, 1000)
    x, y = task.train.x.double(), task.train.y.double()
    assert 0.0 <= x.min() and x.max() <= 1.0
    residual = y - (3.0 * x + 2.0)  # y = a·x + b + σ·ε with a=3, b=2, σ=0.1
    assert residual.std().item() == pytest.approx(0.1, rel=0.1) and abs(residual.mean().item()) < 0.02
    model = task.make_model(0)
    assert isinstance(model, nn.Linear) and (model.in_features, model.out_features) == (1, 1)
    assert task.model_name == "linear1" and not task.classifier


def test_optimal_loss_is_the_least_squares_minimum():
    task = regression(dim=3)
    x, y = task.train.x.double(), task.train.y.double()
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    w = torch.linalg.lstsq(design, y).solution
    model = task.make_model(0).double()
    with torch.no_grad():
        model.weight.copy_(w[:3].T)
        model.bias.copy_(w[3])
        at_optimum = task.loss(model(x), y).item()
        # float32 data in, float64 optimum: agree to the data's rounding
        assert at_optimum == pytest.approx(task.optimal_loss, rel=1e-5)
        for i in range(4):  # the minimum: any small move goes up
            model.weight.add_(0.01 * torch.eye(4, dtype=torch.float64)[i, :3])
            model.bias.add_(0.01 * (i == 3))
            assert task.loss(model(x), y).item() > at_optimum
    assert 0 < task.optimal_loss < 0.02  # ≈ σ² = 0.01


def test_splits_are_independent_draws_and_seeded():
    a, b, c = regression(), regression(), regression(data_seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)
    assert not torch.equal(a.train.x, a.val.x) and not torch.equal(a.val.x, a.test.x)
    assert len(set(a.train.x.flatten().tolist()) & set(a.test.x.flatten().tolist())) == 0


@pytest.mark.parametrize("dim,kappa", [(1, 10.0), (5, 1.0), (50, 100.0), (20, 1000.0)])
def test_condition_number_is_the_loss_hessians(dim, kappa):
    """With a condition_number, the training loss's Hessian in (weights, bias) has exactly that
    condition number (numpy's own computation on the data the model trains on)."""
    task = regression(dim=dim, condition_number=kappa)
    x = task.train.x.double().numpy()
    design = np.c_[x, np.ones(len(x))]
    hessian = 2 * design.T @ design / len(x)
    assert np.linalg.cond(hessian) == pytest.approx(kappa, rel=1e-5)
    eig = np.linalg.eigvalsh(hessian)
    assert task.info["L"] == pytest.approx(eig[-1], rel=1e-9) == pytest.approx(2 * kappa, rel=1e-5)
    assert task.info["mu"] == pytest.approx(2.0, rel=1e-5) and task.info["gd_max_stable_lr"] == pytest.approx(2 / eig[-1])
    assert abs(x.mean(0)).max() < 1e-5  # centred, so the bias is its own eigen-direction
    assert task.train.x.shape == (1000, dim) and task.model_name == f"linear{dim}"


def test_tutorial_data_reports_its_actual_condition_number():
    task = regression()  # uncentred x ~ U[0, 1] with a bias: not 1 but ~19
    x = task.train.x.double().numpy()
    design = np.c_[x, np.ones(len(x))]
    assert task.info["hessian_condition"] == pytest.approx(np.linalg.cond(design.T @ design), rel=1e-9)
    assert 15 < task.info["hessian_condition"] < 25


def test_a_conditioned_target_splits_its_signal_evenly_and_the_optimum_is_the_noise():
    task = regression(dim=50, condition_number=1000.0, sigma=0.1)
    assert task.optimal_loss == pytest.approx(0.01, rel=0.15)
    y = task.train.y.double()
    assert float(((y - y.mean()) ** 2).mean()) == pytest.approx(9.0 + 0.01, rel=0.15)  # a² + σ²


def test_tiny_mlp_is_the_tutorial_network():
    task = build_task({"name": "tiny_mlp"})
    model = task.make_model(0)
    layers = list(model)
    assert [type(m) for m in layers] == [nn.Linear, nn.Tanh, nn.Linear]
    assert (layers[0].in_features, layers[0].out_features, layers[2].out_features) == (1, 10, 1)
    assert task.model_name == "mlp1-10-1" and task.info["target"] == "sine"
    assert -1.0 <= task.train.x.min() and task.train.x.max() <= 1.0
    residual = task.train.y - torch.sin(torch.pi * task.train.x)
    assert residual.std().item() == pytest.approx(0.1, rel=0.1)


@pytest.mark.parametrize("target,fn", [("linear", lambda x: 5 * x + 1), ("cubic", lambda x: 4 * x**3 - 2 * x)])
def test_tiny_mlp_targets(target, fn):
    task = build_task({"name": "tiny_mlp", "target": target, "noise": 0.0, "n": 50, "hidden": 4})
    assert torch.allclose(task.train.y, fn(task.train.x), atol=1e-5)
    assert task.model_name == "mlp1-4-1"


@pytest.mark.parametrize("options,message", [
    ({"name": "regression", "n": 0}, "n=0 must be an integer >= 1"),
    ({"name": "regression", "dim": 2.5}, "dim=2.5 must be an integer"),
    ({"name": "regression", "condition_number": 0.5}, "condition_number must be null .* or a number >= 1"),
    ({"name": "regression", "sigma": -1.0}, "sigma >= 0"),
    ({"name": "regression", "widht": 3}, "has no option widht; valid options: n, n_val"),
    ({"name": "tiny_mlp", "target": "relu"}, "unknown target 'relu'; valid: sine, linear, cubic"),
    ({"name": "tiny_mlp", "hidden": 0}, "hidden=0 must be an integer >= 1"),
    ({"name": "cifar10"}, "unknown task 'cifar10'; valid names: regression, tiny_mlp, fashion_mnist, mnist"),
])
def test_bad_task_options(options, message):
    with pytest.raises(ConfigError, match=message):
        build_task(options)


def test_task_to_moves_splits_and_keeps_labels_integer(fake_mnist_options):
    task = build_task(fake_mnist_options).to(torch.device("cpu"), torch.float64)
    assert task.train.x.dtype == torch.float64 and task.train.y.dtype == torch.long
    reg = regression(n=10).to(torch.device("cpu"), torch.float64)
    assert reg.train.y.dtype == torch.float64 and reg.optimal_loss is not None


def test_registry_names():
    assert set(TASKS) >= {"regression", "tiny_mlp", "fashion_mnist", "mnist"}

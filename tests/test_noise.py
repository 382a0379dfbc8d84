"""The gradient noise scale at evaluation points: the exact B_simple and B_noise against a
brute-force computation on a small quadratic, |G_b|² from per-example gradients against autograd,
the two-batch estimator's error against the exact value along real runs, negative estimates kept,
and the measurement leaving the run unchanged."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from suite.optim.registry import resolve_hparams
from suite.tasks import build_task
from suite.train import train, train_stacked
from suite.train.noise import _autograd_sq, _per_example_sq, _solve, exact, loss_hessian, per_example_gradients
from suite.types import EvalSpec, RunSpec

QUADRATIC = {"name": "regression", "dim": 6, "condition_number": 30.0, "n": 200}


def test_exact_b_simple_and_b_noise_match_brute_force_on_a_small_quadratic():
    """H = 2/n·X̃ᵀX̃ for the mean squared error of w·x + b (X̃ = [X, 1]); per-example gradients
    2(w·x + b − y)·x̃; Σ their covariance (1/n); B_noise = tr(HΣ)/(GᵀHG), B_simple = tr(Σ)/|G|²."""
    task = build_task(QUADRATIC)
    model = task.make_model(3)
    x = np.c_[task.train.x.double().numpy(), np.ones(task.n_train)]
    y = task.train.y.double().numpy()[:, 0]
    theta = np.r_[model.weight.detach().double().numpy()[0], model.bias.detach().double().item()]
    g = 2 * (x @ theta - y)[:, None] * x
    G = g.mean(0)
    sigma = (g - G).T @ (g - G) / len(g)
    H = 2 * x.T @ x / len(x)
    got = exact(per_example_gradients(model, task), loss_hessian(model, task))
    assert got["b_simple_exact"] == pytest.approx(np.trace(sigma) / (G @ G), rel=1e-6)
    assert got["b_noise_exact"] == pytest.approx(np.trace(H @ sigma) / (G @ H @ G), rel=1e-6)
    assert loss_hessian(model, task).numpy() == pytest.approx(H, rel=1e-6, abs=1e-9)


def test_batch_gradient_norms_from_per_example_gradients_equal_autograd():
    task = build_task({"name": "tiny_mlp", "n": 300})
    model = task.make_model(0)
    batches = torch.randint(task.n_train, (5, 32), generator=torch.Generator().manual_seed(0))
    fast = _per_example_sq(per_example_gradients(model, task))(batches)
    assert fast == pytest.approx(_autograd_sq(model, task)(batches), rel=1e-5)


def test_a_negative_estimate_is_kept_as_measured():
    value, rel_se = _solve(32, [0.9, 1.0, 0.95], None, [], g2_full=1.0)  # small batches below |G|²
    assert value < 0 and rel_se == math.inf
    value, rel_se = _solve(32, [3.0, 2.8, 3.2], None, [], g2_full=1.0)
    assert value == pytest.approx(32 * 2.0) and 0 < rel_se < 1


@pytest.mark.parametrize("task_options, optimizer, lr", [
    (QUADRATIC | {"dim": 20, "condition_number": 100.0, "n": 500}, "sgd", 0.004),
    ({"name": "tiny_mlp", "n": 500}, "adam", 0.02)])
def test_the_estimate_is_within_ten_percent_of_exact_and_leaves_the_run_unchanged(task_options, optimizer, lr):
    """Median per-point error of the two-batch estimate against the exact B_simple ≤ 10% over a
    run's evaluations; the rows other than the noise columns are those of the same run unmeasured."""
    task = build_task(task_options)
    base = RunSpec(task=task_options["name"], optimizer=optimizer, hparams=resolve_hparams(optimizer, {}), lr=lr,
                   batch_size=8, epochs=3.0, eval=EvalSpec(points=12))
    measured_spec = dataclasses.replace(base, eval=dataclasses.replace(base.eval, noise_scale=True))
    plain, measured = train(task, base), train(task, measured_spec)
    strip = ("time_s", "b_simple_est", "b_simple_exact", "b_noise_exact")
    assert [{k: v for k, v in r.items() if k not in strip} for r in plain.rows] == \
        [{k: v for k, v in r.items() if k not in strip} for r in measured.rows]
    assert all(math.isnan(r["b_simple_est"]) for r in plain.rows)
    errors = [abs(r["b_simple_est"] / r["b_simple_exact"] - 1) for r in measured.rows]
    assert len(errors) >= 10 and float(np.median(errors)) <= 0.10
    assert all(math.isfinite(r["b_noise_exact"]) for r in measured.rows)
    stacked = train_stacked(task, [dataclasses.replace(measured_spec, seed=s) for s in (0, 1)])
    for col in ("b_simple_exact", "b_noise_exact"):
        assert stacked[0].rows[-1][col] == pytest.approx(measured.rows[-1][col], rel=1e-4)

"""Synthetic tasks: linear ``regression`` (closed-form optimum known) and tutorial 001's ``tiny_mlp``.

Train, validation and test samples are drawn one after the other from one generator seeded by
``data_seed``, so they are independent draws from the same distribution and never overlap:
tuning reads the validation split, the test split is for final reporting only.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from suite.tasks.options import positive_int
from suite.tasks.parts import mse, seeded_model
from suite.types import ConfigError, Split, Task

# Targets of tiny_mlp on x ~ U[-1, 1]. "linear" is tutorial 001's y = 5x + 1; the default "sine"
# is non-linear so the hidden layer has something to learn.
TARGETS: dict[str, Callable[[Tensor], Tensor]] = {
    "sine": lambda x: torch.sin(math.pi * x),
    "linear": lambda x: 5.0 * x + 1.0,
    "cubic": lambda x: 4.0 * x**3 - 2.0 * x,
}


def _least_squares(x: Tensor, y: Tensor) -> tuple[float, Tensor]:
    """Minimum of the mean squared error of ``w·x + b`` on (x, y), and the Hessian of that loss
    (both in float64, from the data as the model sees them)."""
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    hessian = 2.0 * design.T @ design / len(x)
    solution = torch.linalg.solve(hessian, 2.0 * design.T @ y / len(x))  # the normal equations
    return ((design @ solution - y) ** 2).mean().item(), hessian


def _spectrum(dim: int, kappa: float) -> Tensor:
    """Feature covariance eigenvalues from 1 to ``kappa``, log-spaced (with the bias's own eigenvalue
    1, the training-loss Hessian then has eigenvalues 2·[1, kappa]: condition number kappa)."""
    if dim == 1:
        return torch.tensor([kappa], dtype=torch.float64)
    return kappa ** (torch.arange(dim, dtype=torch.float64) / (dim - 1))


def _conditioned(o: dict[str, Any], sizes: list[int], dim: int, kappa: float, gen: torch.Generator):
    """Centred Gaussian features whose training-set covariance is exactly ``V·diag(λ)·Vᵀ`` (a random
    rotation V, so a diagonal preconditioner cannot undo the conditioning), and a target whose every
    eigen-direction carries an equal share ``a²/d`` of the signal."""
    lam = _spectrum(dim, kappa)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    n = sizes[0]
    if n <= dim:
        raise ConfigError(f"task 'regression': condition_number needs n > dim (n={n}, dim={dim}).")
    z = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    u, _, _ = torch.linalg.svd(z - z.mean(0), full_matrices=False)  # orthonormal columns, each orthogonal to 1
    train_x = (n ** 0.5) * u @ torch.diag(lam.sqrt()) @ rotation.T
    weights = rotation @ (float(o["a"]) / (dim * lam).sqrt())

    def draw(x: Tensor) -> tuple[Tensor, Tensor]:
        y = x @ weights.unsqueeze(1) + float(o["b"])
        return x, y + float(o["sigma"]) * torch.randn(len(x), 1, generator=gen, dtype=torch.float64)

    def gaussian(m: int) -> Tensor:
        return torch.randn(m, dim, generator=gen, dtype=torch.float64) @ torch.diag(lam.sqrt()) @ rotation.T

    return [draw(train_x), draw(gaussian(sizes[1])), draw(gaussian(sizes[2]))]


def _tutorial(o: dict[str, Any], sizes: list[int], dim: int, gen: torch.Generator):
    """Tutorial 003's data: x_j ~ U[0, 1], y = a·(x_1 + ... + x_d) + b + σ·ε."""
    def draw(n: int) -> tuple[Tensor, Tensor]:
        x = torch.rand(n, dim, generator=gen, dtype=torch.float64)
        y = float(o["a"]) * x.sum(1, keepdim=True) + float(o["b"])
        return x, y + float(o["sigma"]) * torch.randn(n, 1, generator=gen, dtype=torch.float64)

    return [draw(n) for n in sizes]


def build_regression(o: dict[str, Any]) -> Task:
    """Linear regression, model ``Linear(dim, 1)``, MSE; the optimum is known in closed form.

    ``condition_number: null`` is tutorial 003's problem (y = 3x + 2 + 0.1ε on x ~ U[0, 1] with the
    defaults; uncentred x and the bias give its Hessian a condition number of ~19, reported in
    ``info``). A number κ makes the training loss's Hessian (in the weights and the bias) have
    condition number exactly κ: eigenvalues 2·[1, κ], so L = 2κ, μ = 2 and GD is stable below 2/L.
    """
    sizes = [positive_int(o, k, "regression") for k in ("n", "n_val", "n_test")]
    dim = positive_int(o, "dim", "regression")
    kappa, sigma = o["condition_number"], float(o["sigma"])
    if (kappa is not None and not (isinstance(kappa, (int, float)) and kappa >= 1.0)) or not sigma >= 0.0:
        raise ConfigError("task 'regression': condition_number must be null (tutorial 003's data) or a number "
                          ">= 1, and sigma >= 0.")
    gen = torch.Generator().manual_seed(int(o["data_seed"]))
    splits = _tutorial(o, sizes, dim, gen) if kappa is None else _conditioned(o, sizes, dim, float(kappa), gen)
    (xt, yt), (xv, yv), (xs, ys) = ((x.float(), y.float()) for x, y in splits)
    optimum, hessian = _least_squares(xt.double(), yt.double())
    eig = torch.linalg.eigvalsh(hessian)
    info = {"hessian_condition": (eig[-1] / eig[0]).item(), "L": eig[-1].item(), "mu": eig[0].item(),
            "gd_max_stable_lr": 2.0 / eig[-1].item()}
    return Task(
        name="regression", model_name=f"linear{dim}",
        train=Split(xt, yt), val=Split(xv, yv), test=Split(xs, ys),
        make_model=seeded_model(lambda: nn.Linear(dim, 1)), loss=mse, classifier=False,
        optimal_loss=optimum, info=info,
    )


def build_tiny_mlp(o: dict[str, Any]) -> Task:
    """Tutorial 001's 1-H-1 tanh network (H=10) fitting ``target(x) + noise·ε`` on x ~ U[-1, 1]."""
    sizes = [positive_int(o, k, "tiny_mlp") for k in ("n", "n_val", "n_test")]
    hidden = positive_int(o, "hidden", "tiny_mlp")
    if o["target"] not in TARGETS:
        raise ConfigError(f"task 'tiny_mlp': unknown target {o['target']!r}; valid: {', '.join(TARGETS)}.")
    target, noise = TARGETS[o["target"]], float(o["noise"])
    gen = torch.Generator().manual_seed(int(o["data_seed"]))

    def draw(n: int) -> Split:
        x = torch.rand(n, 1, generator=gen) * 2.0 - 1.0
        return Split(x, target(x) + noise * torch.randn(n, 1, generator=gen))

    train, val, test = (draw(n) for n in sizes)
    model = seeded_model(lambda: nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1)))
    return Task(
        name="tiny_mlp", model_name=f"mlp1-{hidden}-1", train=train, val=val, test=test,
        make_model=model, loss=mse, classifier=False, info={"target": o["target"]},
    )

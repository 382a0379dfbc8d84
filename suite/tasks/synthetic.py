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


def _feature_scales(dim: int, kappa: float) -> Tensor:
    """Per-feature scales whose squared max/min ratio (feature variance ratio) is ``kappa``."""
    if dim == 1:
        return torch.ones(1, dtype=torch.float64)
    return kappa ** (-torch.arange(dim, dtype=torch.float64) / (2 * (dim - 1)))


def _least_squares(x: Tensor, y: Tensor) -> tuple[float, Tensor]:
    """Minimum of the mean squared error of ``w·x + b`` on (x, y), and the Hessian of that loss."""
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution
    optimum = ((design @ solution - y) ** 2).mean().item()
    return optimum, 2.0 * design.T @ design / len(x)


def build_regression(o: dict[str, Any]) -> Task:
    """y = a·(x_1 + ... + x_d) + b + σ·ε, x_j ~ U[0, s_j], ε ~ N(0, 1); model ``Linear(dim, 1)``, MSE."""
    sizes = [positive_int(o, k, "regression") for k in ("n", "n_val", "n_test")]
    dim = positive_int(o, "dim", "regression")
    kappa, sigma = float(o["condition_number"]), float(o["sigma"])
    if not kappa >= 1.0 or not sigma >= 0.0:
        raise ConfigError("task 'regression': condition_number must be >= 1 and sigma >= 0.")
    gen = torch.Generator().manual_seed(int(o["data_seed"]))
    scales = _feature_scales(dim, kappa)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        x = torch.rand(n, dim, generator=gen, dtype=torch.float64) * scales
        y = float(o["a"]) * x.sum(1, keepdim=True) + float(o["b"])
        return x, y + sigma * torch.randn(n, 1, generator=gen, dtype=torch.float64)

    (xt, yt), (xv, yv), (xs, ys) = (draw(n) for n in sizes)
    optimum, hessian = _least_squares(xt, yt)
    eig = torch.linalg.eigvalsh(hessian)
    info = {"hessian_condition": (eig[-1] / eig[0]).item(), "gd_max_stable_lr": 2.0 / eig[-1].item()}
    return Task(
        name="regression", model_name=f"linear{dim}",
        train=Split(xt.float(), yt.float()), val=Split(xv.float(), yv.float()), test=Split(xs.float(), ys.float()),
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

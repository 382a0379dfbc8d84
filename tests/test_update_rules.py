"""Update-rule conformance: every registry entry that carries a reference (``OptimizerSpec.reference``,
the rule written out in plain Python floats in ``suite.optim.references``), every implementation
torch offers, 10 steps in float64 on a fixed quadratic, to 1e-10. A new entry with a reference is
checked here with no test edit.

Hyperparameters are set away from their defaults (weight decay and a large eps included) so a
formula that puts eps or weight decay in the wrong place fails.
"""
from __future__ import annotations

import pytest
import torch

from suite.optim.build import build_optimizer
from suite.optim.registry import OPTIMIZERS

A = [[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]]  # symmetric positive definite
B = [1.0, -2.0, 0.5]
THETA0 = [1.0, -1.0, 2.0]
LR, STEPS = 0.1, 10
HPARAMS = {"momentum": 0.8, "beta1": 0.8, "beta2": 0.95, "alpha": 0.9, "eps": 1e-3, "weight_decay": 0.05}


def grad(theta: list[float], wd: float = 0.0) -> list[float]:
    """∇ of f(θ) = ½θᵀAθ − bᵀθ (+ ½·wd·|θ|², coupled weight decay)."""
    return [sum(a * t for a, t in zip(row, theta)) - b + wd * th for row, b, th in zip(A, B, theta)]


def reference(name: str, hp: dict) -> list[float]:
    return OPTIMIZERS[name].reference(hp, LR, STEPS, grad, THETA0)


WITH_REFERENCE = [n for n, spec in OPTIMIZERS.items() if spec.reference is not None]


def impls(name: str) -> list[str]:
    spec = OPTIMIZERS[name]
    return ["forloop"] + (["foreach"] if spec.foreach else []) + (["fused"] if spec.fused else [])


def torch_run(name: str, hp: dict, impl: str) -> list[float]:
    theta = torch.tensor(THETA0, dtype=torch.float64, requires_grad=True)
    a, b = torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)
    # float64 throughout: scalar state torch keeps in the default dtype (NAdam's μ product) too
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        opt, ran = build_optimizer(name, [theta], LR, hp, impl)
        assert ran == impl

        def closure():
            opt.zero_grad()
            loss = 0.5 * theta @ a @ theta - b @ theta
            loss.backward()  # weight decay is the optimizer's job
            return loss

        for _ in range(STEPS):
            if OPTIMIZERS[name].closure:  # the step re-evaluates the loss itself (L-BFGS)
                opt.step(closure)
            else:
                closure()
                opt.step()
    finally:
        torch.set_default_dtype(default)
    return theta.detach().tolist()


def test_the_tutorial_optimizers_carry_references():
    missing = sorted(n for n, spec in OPTIMIZERS.items() if spec.tutorial and spec.reference is None)
    assert not missing, f"write the update rule of {missing} in suite/optim/references.py"


@pytest.mark.parametrize("name,impl", [(n, i) for n in WITH_REFERENCE for i in impls(n)])
def test_matches_textbook_formula(name, impl):
    hp = {k: HPARAMS.get(k, v) for k, v in OPTIMIZERS[name].defaults.items()}
    expected = reference(name, hp)
    got = torch_run(name, hp, impl)
    assert max(abs(e - g) for e, g in zip(expected, got)) < 1e-10, (expected, got)
    assert max(abs(e - t) for e, t in zip(expected, THETA0)) > 1e-2, "the run must actually move"


@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_reference_is_sensitive(name):
    """The references are not vacuous: changing one hyperparameter changes the trajectory."""
    hp = {k: HPARAMS.get(k, v) for k, v in OPTIMIZERS[name].defaults.items()}
    base = reference(name, hp)
    for key in hp:
        changed = reference(name, {**hp, key: hp[key] * 0.5})
        assert max(abs(x - y) for x, y in zip(base, changed)) > 1e-8, f"{name}: {key} has no effect"


def test_momentum_seed_form_differs_when_lr_changes():
    """The textbook form (tutorial 001) equals PyTorch's only for a constant lr (docstring claim): halve lr midway."""
    hp = {"momentum": 0.8, "weight_decay": 0.0}
    theta = torch.tensor(THETA0, dtype=torch.float64, requires_grad=True)
    opt, _ = build_optimizer("momentum", [theta], LR, hp, "forloop")
    gamma, ref, v = hp["momentum"], list(THETA0), [0.0] * 3
    for step in range(STEPS):
        lr = LR if step < STEPS // 2 else LR / 2
        opt.param_groups[0]["lr"] = lr
        theta.grad = torch.tensor(grad(theta.tolist()), dtype=torch.float64)
        opt.step()
        v = [gamma * vi + lr * g for vi, g in zip(v, grad(ref))]
        ref = [t - vi for t, vi in zip(ref, v)]
    assert max(abs(a - b) for a, b in zip(ref, theta.tolist())) > 1e-4

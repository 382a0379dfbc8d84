"""Update-rule conformance: every registry entry, every implementation torch offers, against the
textbook formula written out in plain Python floats (no torch), 10 steps in float64 on a fixed
quadratic, to 1e-10.

The references use the seed's forms where the seed had one: momentum ``v = γv + η∇; θ = θ − v``
(equal to PyTorch's ``v = μv + g; θ −= lr·v`` for a constant lr) and Nesterov's look-ahead form
``v = γv + η∇f(θ' − γv); θ' = θ' − v``, whose iterate maps to PyTorch's as ``θ = θ' − γv``.
Hyperparameters are set away from their defaults (weight decay and a large eps included) so a
formula that puts eps or weight decay in the wrong place fails.
"""
from __future__ import annotations

import math

import pytest
import torch

from suite.optimizers import OPTIMIZERS, build_optimizer

A = [[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]]  # symmetric positive definite
B = [1.0, -2.0, 0.5]
THETA0 = [1.0, -1.0, 2.0]
LR, STEPS = 0.1, 10
HPARAMS = {"momentum": 0.8, "beta1": 0.8, "beta2": 0.95, "alpha": 0.9, "eps": 1e-3, "weight_decay": 0.05}


def grad(theta: list[float], wd: float = 0.0) -> list[float]:
    """∇ of f(θ) = ½θᵀAθ − bᵀθ (+ ½·wd·|θ|², coupled weight decay)."""
    return [sum(a * t for a, t in zip(row, theta)) - b + wd * th for row, b, th in zip(A, B, theta)]


def sgd(hp):
    theta = list(THETA0)
    for _ in range(STEPS):
        theta = [t - LR * g for t, g in zip(theta, grad(theta, hp["weight_decay"]))]
    return theta


def momentum(hp):
    """Seed form: v = γv + η∇θ; θ = θ − v."""
    gamma, theta, v = hp["momentum"], list(THETA0), [0.0] * 3
    for _ in range(STEPS):
        v = [gamma * vi + LR * g for vi, g in zip(v, grad(theta, hp["weight_decay"]))]
        theta = [t - vi for t, vi in zip(theta, v)]
    return theta


def nesterov(hp):
    """Look-ahead form: v = γv + η∇f(θ' − γv); θ' = θ' − v. Returns PyTorch's iterate θ' − γv."""
    gamma, ahead, v = hp["momentum"], list(THETA0), [0.0] * 3
    for _ in range(STEPS):
        g = grad([a - gamma * vi for a, vi in zip(ahead, v)], hp["weight_decay"])
        v = [gamma * vi + LR * gi for vi, gi in zip(v, g)]
        ahead = [a - vi for a, vi in zip(ahead, v)]
    return [a - gamma * vi for a, vi in zip(ahead, v)]


def adagrad(hp):
    """s = s + g²; θ = θ − η·g / (√s + ε)."""
    theta, s = list(THETA0), [0.0] * 3
    for _ in range(STEPS):
        g = grad(theta, hp["weight_decay"])
        s = [si + gi * gi for si, gi in zip(s, g)]
        theta = [t - LR * gi / (math.sqrt(si) + hp["eps"]) for t, gi, si in zip(theta, g, s)]
    return theta


def rmsprop(hp):
    """s = αs + (1 − α)g²; θ = θ − η·g / (√s + ε)."""
    alpha, theta, s = hp["alpha"], list(THETA0), [0.0] * 3
    for _ in range(STEPS):
        g = grad(theta, hp["weight_decay"])
        s = [alpha * si + (1 - alpha) * gi * gi for si, gi in zip(s, g)]
        theta = [t - LR * gi / (math.sqrt(si) + hp["eps"]) for t, gi, si in zip(theta, g, s)]
    return theta


def _adam(hp, coupled_wd: float, decoupled_wd: float):
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    theta, m, s = list(THETA0), [0.0] * 3, [0.0] * 3
    for t in range(1, STEPS + 1):
        g = grad(theta, coupled_wd)
        theta = [th * (1 - LR * decoupled_wd) for th in theta]
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        s = [b2 * si + (1 - b2) * gi * gi for si, gi in zip(s, g)]
        m_hat = [mi / (1 - b1**t) for mi in m]
        s_hat = [si / (1 - b2**t) for si in s]
        theta = [th - LR * mh / (math.sqrt(sh) + eps) for th, mh, sh in zip(theta, m_hat, s_hat)]
    return theta


def adam(hp):
    """Adam with bias correction; weight decay added to the gradient."""
    return _adam(hp, coupled_wd=hp["weight_decay"], decoupled_wd=0.0)


def adamw(hp):
    """AdamW: θ = θ(1 − η·wd) (decoupled; the gradient is evaluated before the decay), then Adam."""
    return _adam(hp, coupled_wd=0.0, decoupled_wd=hp["weight_decay"])


REFERENCES = {f.__name__: f for f in (sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw)}


def impls(name: str) -> list[str]:
    return ["forloop", "foreach"] + (["fused"] if OPTIMIZERS[name].fused else [])


def torch_run(name: str, hp: dict, impl: str) -> list[float]:
    theta = torch.tensor(THETA0, dtype=torch.float64, requires_grad=True)
    a, b = torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)
    opt, ran = build_optimizer(name, [theta], LR, hp, impl)
    assert ran == impl
    for _ in range(STEPS):
        opt.zero_grad()
        (0.5 * theta @ a @ theta - b @ theta).backward()  # weight decay is the optimizer's job
        opt.step()
    return theta.detach().tolist()


def test_every_optimizer_has_a_reference():
    missing = sorted(set(OPTIMIZERS) - set(REFERENCES))
    assert not missing, f"write the textbook update rule of {missing} in tests/test_update_rules.py"


@pytest.mark.parametrize("name,impl", [(n, i) for n in OPTIMIZERS for i in impls(n)])
def test_matches_textbook_formula(name, impl):
    hp = {k: HPARAMS[k] for k in OPTIMIZERS[name].defaults}
    expected = REFERENCES[name](hp)
    got = torch_run(name, hp, impl)
    assert max(abs(e - g) for e, g in zip(expected, got)) < 1e-10, (expected, got)
    assert max(abs(e - t) for e, t in zip(expected, THETA0)) > 1e-2, "the run must actually move"


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_reference_is_sensitive(name):
    """The references are not vacuous: changing one hyperparameter changes the trajectory."""
    hp = {k: HPARAMS[k] for k in OPTIMIZERS[name].defaults}
    base = REFERENCES[name](hp)
    for key in hp:
        changed = REFERENCES[name]({**hp, key: hp[key] * 0.5})
        assert max(abs(x - y) for x, y in zip(base, changed)) > 1e-8, f"{name}: {key} has no effect"


def test_momentum_seed_form_differs_when_lr_changes():
    """The seed form equals PyTorch's only for a constant lr (docstring claim): halve lr midway."""
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

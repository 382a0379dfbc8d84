"""Update rules written out in plain Python floats (no torch): the readable references that every
implementation torch offers is checked against (the optimizer contract tests, float64, 1e-10).

Each reference runs ``steps`` steps from ``theta0`` on a function whose gradient is
``grad(theta, wd)`` (``wd`` adds coupled weight decay ``wd·θ``) and returns the last iterate.
Where tutorial 001 has a form, the reference uses it: momentum ``v = γv + η∇; θ = θ − v`` (equal to
PyTorch's ``v = μv + g; θ −= lr·v`` for a constant lr) and Nesterov's look-ahead form
``v = γv + η∇f(θ' − γv); θ' = θ' − v``, whose iterate maps to PyTorch's as ``θ = θ' − γv``.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

Grad = Callable[[list[float], float], list[float]]


def sgd(hp: Mapping[str, float], lr: float, steps: int, grad: Grad, theta0: list[float]) -> list[float]:
    """θ = θ − η·(∇ + wd·θ)."""
    theta = list(theta0)
    for _ in range(steps):
        theta = [t - lr * g for t, g in zip(theta, grad(theta, hp["weight_decay"]))]
    return theta


def momentum(hp, lr, steps, grad, theta0):
    """v = γv + η∇θ; θ = θ − v."""
    gamma, theta, v = hp["momentum"], list(theta0), [0.0] * len(theta0)
    for _ in range(steps):
        v = [gamma * vi + lr * g for vi, g in zip(v, grad(theta, hp["weight_decay"]))]
        theta = [t - vi for t, vi in zip(theta, v)]
    return theta


def nesterov(hp, lr, steps, grad, theta0):
    """v = γv + η∇f(θ' − γv); θ' = θ' − v. Returns PyTorch's iterate θ' − γv."""
    gamma, ahead, v = hp["momentum"], list(theta0), [0.0] * len(theta0)
    for _ in range(steps):
        g = grad([a - gamma * vi for a, vi in zip(ahead, v)], hp["weight_decay"])
        v = [gamma * vi + lr * gi for vi, gi in zip(v, g)]
        ahead = [a - vi for a, vi in zip(ahead, v)]
    return [a - gamma * vi for a, vi in zip(ahead, v)]


def adagrad(hp, lr, steps, grad, theta0):
    """s = s + g²; θ = θ − η·g / (√s + ε)."""
    theta, s = list(theta0), [0.0] * len(theta0)
    for _ in range(steps):
        g = grad(theta, hp["weight_decay"])
        s = [si + gi * gi for si, gi in zip(s, g)]
        theta = [t - lr * gi / (math.sqrt(si) + hp["eps"]) for t, gi, si in zip(theta, g, s)]
    return theta


def rmsprop(hp, lr, steps, grad, theta0):
    """s = αs + (1 − α)g²; θ = θ − η·g / (√s + ε)."""
    alpha, theta, s = hp["alpha"], list(theta0), [0.0] * len(theta0)
    for _ in range(steps):
        g = grad(theta, hp["weight_decay"])
        s = [alpha * si + (1 - alpha) * gi * gi for si, gi in zip(s, g)]
        theta = [t - lr * gi / (math.sqrt(si) + hp["eps"]) for t, gi, si in zip(theta, g, s)]
    return theta


def _adam(hp, lr, steps, grad, theta0, coupled_wd: float, decoupled_wd: float):
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    theta, m, s = list(theta0), [0.0] * len(theta0), [0.0] * len(theta0)
    for t in range(1, steps + 1):
        g = grad(theta, coupled_wd)
        theta = [th * (1 - lr * decoupled_wd) for th in theta]
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        s = [b2 * si + (1 - b2) * gi * gi for si, gi in zip(s, g)]
        m_hat = [mi / (1 - b1**t) for mi in m]
        s_hat = [si / (1 - b2**t) for si in s]
        theta = [th - lr * mh / (math.sqrt(sh) + eps) for th, mh, sh in zip(theta, m_hat, s_hat)]
    return theta


def adam(hp, lr, steps, grad, theta0):
    """Adam with bias correction; weight decay added to the gradient."""
    return _adam(hp, lr, steps, grad, theta0, coupled_wd=hp["weight_decay"], decoupled_wd=0.0)


def adamw(hp, lr, steps, grad, theta0):
    """AdamW: θ = θ(1 − η·wd) (decoupled; the gradient is evaluated before the decay), then Adam."""
    return _adam(hp, lr, steps, grad, theta0, coupled_wd=0.0, decoupled_wd=hp["weight_decay"])

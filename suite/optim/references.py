"""Update rules written out in plain Python floats (no torch): the readable references that every
implementation torch offers is checked against (the optimizer contract tests, float64, 1e-10).

Each reference runs ``steps`` steps from ``theta0`` on a function whose gradient is
``grad(theta, wd)`` (``wd`` adds coupled weight decay ``wd·θ``) and returns the last iterate.
Where tutorial 001 has a form, the reference uses it: momentum ``v = γv + η∇; θ = θ − v`` (equal to
PyTorch's ``v = μv + g; θ −= lr·v`` for a constant lr) and Nesterov's look-ahead form
``v = γv + η∇f(θ' − γv); θ' = θ' − v``, whose iterate maps to PyTorch's as ``θ = θ' − γv``.
Schedule-free methods are written in the paper's three sequences (x, y, z) and return y, what
the parameters hold while training; L-BFGS is the textbook two-loop recursion.
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


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def nadam(hp, lr, steps, grad, theta0):
    """μ_t = β1(1 − ½·0.96^(tψ)); θ −= η(1−μ_t)/(1−Πμ)·g/d + η·μ_{t+1}/(1−Πμ·μ_{t+1})·m/d."""
    b1, b2, eps, psi = hp["beta1"], hp["beta2"], hp["eps"], hp["momentum_decay"]
    theta, m, s, prod = list(theta0), [0.0] * len(theta0), [0.0] * len(theta0), 1.0
    for t in range(1, steps + 1):
        g = grad(theta, hp["weight_decay"])
        mu, mu_next = (b1 * (1 - 0.5 * 0.96 ** (k * psi)) for k in (t, t + 1))
        prod *= mu
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        s = [b2 * si + (1 - b2) * gi * gi for si, gi in zip(s, g)]
        d = [math.sqrt(si / (1 - b2**t)) + eps for si in s]
        theta = [th - lr * (1 - mu) / (1 - prod) * gi / di - lr * mu_next / (1 - prod * mu_next) * mi / di
                 for th, gi, mi, di in zip(theta, g, m, d)]
    return theta


def radam(hp, lr, steps, grad, theta0):
    """Adam's m̂; θ −= η·m̂ while ρ_t ≤ 5, else θ −= η·r_t·m̂·√(1−β2^t)/(√s + ε)."""
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    theta, m, s = list(theta0), [0.0] * len(theta0), [0.0] * len(theta0)
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, steps + 1):
        g = grad(theta, hp["weight_decay"])
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        s = [b2 * si + (1 - b2) * gi * gi for si, gi in zip(s, g)]
        m_hat = [mi / (1 - b1**t) for mi in m]
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho > 5:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            theta = [th - lr * r * mh * math.sqrt(1 - b2**t) / (math.sqrt(si) + eps)
                     for th, mh, si in zip(theta, m_hat, s)]
        else:
            theta = [th - lr * mh for th, mh in zip(theta, m_hat)]
    return theta


def adamax(hp, lr, steps, grad, theta0):
    """m = β1m + (1−β1)g; u = max(β2u, |g| + ε); θ −= η/(1−β1^t)·m/u."""
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    theta, m, u = list(theta0), [0.0] * len(theta0), [0.0] * len(theta0)
    for t in range(1, steps + 1):
        g = grad(theta, hp["weight_decay"])
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        u = [max(b2 * ui, abs(gi) + eps) for ui, gi in zip(u, g)]
        theta = [th - lr / (1 - b1**t) * mi / ui for th, mi, ui in zip(theta, m, u)]
    return theta


def adadelta(hp, lr, steps, grad, theta0):
    """v = ρv + (1−ρ)g²; Δ = √(u+ε)/√(v+ε)·g; u = ρu + (1−ρ)Δ²; θ −= η·Δ."""
    rho, eps = hp["rho"], hp["eps"]
    theta, v, u = list(theta0), [0.0] * len(theta0), [0.0] * len(theta0)
    for _ in range(steps):
        g = grad(theta, hp["weight_decay"])
        v = [rho * vi + (1 - rho) * gi * gi for vi, gi in zip(v, g)]
        delta = [math.sqrt(ui + eps) / math.sqrt(vi + eps) * gi for ui, vi, gi in zip(u, v, g)]
        u = [rho * ui + (1 - rho) * di * di for ui, di in zip(u, delta)]
        theta = [th - lr * di for th, di in zip(theta, delta)]
    return theta


def adafactor(hp, lr, steps, grad, theta0, eps1: float = 2.0**-52, eps2: float = 1e-3):
    """Adafactor on a vector (no factoring): relative step α = max(ε2, RMS(θ))·min(η, 1/√t),
    decoupled decay θ(1 − η·wd), v = β̂2·v + (1−β̂2)g² with β̂2 = 1 − t^c, u = g/√max(v, ε1²),
    θ −= α·u / max(1, RMS(u)/d). ε1 is float64's machine epsilon, as torch uses for float64."""
    n, theta, v = len(theta0), list(theta0), [0.0] * len(theta0)
    for t in range(1, steps + 1):
        g = grad(theta, 0.0)
        one_minus_b2 = t ** hp["beta2_decay"]
        alpha = max(eps2, math.sqrt(_dot(theta, theta) / n)) * min(lr, 1 / math.sqrt(t))
        theta = [th * (1 - lr * hp["weight_decay"]) for th in theta]
        v = [vi + one_minus_b2 * (gi * gi - vi) for vi, gi in zip(v, g)]
        u = [gi / math.sqrt(max(vi, eps1 * eps1)) for vi, gi in zip(v, g)]
        clip = max(1.0, math.sqrt(_dot(u, u) / n) / hp["d"])
        theta = [th - alpha / clip * ui for th, ui in zip(theta, u)]
    return theta


def lion(hp, lr, steps, grad, theta0):
    """θ = θ(1 − η·wd); θ −= η·sign(β1m + (1−β1)g); m = β2m + (1−β2)g."""
    b1, b2, wd = hp["beta1"], hp["beta2"], hp["weight_decay"]
    theta, m = list(theta0), [0.0] * len(theta0)
    for _ in range(steps):
        g = grad(theta, 0.0)
        c = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        theta = [th * (1 - lr * wd) - lr * math.copysign(1.0, ci) * (ci != 0) for th, ci in zip(theta, c)]
        m = [b2 * mi + (1 - b2) * gi for mi, gi in zip(m, g)]
    return theta


def _schedule_free(theta0, steps, beta, direction):
    """x, z start at θ0; each step: u = direction(y, t); z −= u; x = (1 − 1/t)x + z/t;
    y = (1 − β)z + βx (the point the gradient is taken at, what the parameters hold in training)."""
    x, z, y = list(theta0), list(theta0), list(theta0)
    for t in range(1, steps + 1):
        u = direction(y, t)
        z = [zi - ui for zi, ui in zip(z, u)]
        x = [(1 - 1 / t) * xi + zi / t for xi, zi in zip(x, z)]
        y = [(1 - beta) * zi + beta * xi for zi, xi in zip(z, x)]
    return y


def schedulefree_sgd(hp, lr, steps, grad, theta0):
    """Schedule-free SGD: z −= η(∇f(y) + wd·y), uniform averaging of z into x, y between them."""
    return _schedule_free(theta0, steps, hp["momentum"],
                          lambda y, t: [lr * gi for gi in grad(y, hp["weight_decay"])])


def schedulefree_adamw(hp, lr, steps, grad, theta0):
    """Schedule-free AdamW: s = β2s + (1−β2)g²; z −= η(g/(√(s/(1−β2^t)) + ε) + wd·y)."""
    b2, eps, s = hp["beta2"], hp["eps"], [0.0] * len(theta0)

    def direction(y, t):
        nonlocal s
        g = grad(y, 0.0)
        s = [b2 * si + (1 - b2) * gi * gi for si, gi in zip(s, g)]
        return [lr * (gi / (math.sqrt(si / (1 - b2**t)) + eps) + hp["weight_decay"] * yi)
                for gi, si, yi in zip(g, s, y)]

    return _schedule_free(theta0, steps, hp["beta1"], direction)


def lbfgs(hp, lr, steps, grad, theta0, tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9):
    """L-BFGS, one iteration per step, fixed step length (no line search): d = −H·g by the
    two-loop recursion over the last m pairs (s, y) with sᵀy > 1e-10, H₀ = sᵀy/yᵀy; θ += t·d with
    t = η·min(1, 1/‖g‖₁) on the first step, η after."""
    m = hp["history_size"]
    theta, pairs, h0, d, t, prev = list(theta0), [], 1.0, None, lr, None
    for _ in range(steps):
        g = grad(theta, 0.0)
        if max(abs(gi) for gi in g) <= tolerance_grad:
            continue  # converged: torch returns without moving
        first = d is None
        if first:
            d = [-gi for gi in g]
        else:
            y = [a - b for a, b in zip(g, prev)]
            s = [t * di for di in d]
            ys = _dot(y, s)
            if ys > 1e-10:
                pairs = (pairs + [(s, y, 1 / ys)])[-int(m):]
                h0 = ys / _dot(y, y)
            q, alphas = [-gi for gi in g], []
            for s_i, y_i, rho_i in reversed(pairs):
                a = rho_i * _dot(s_i, q)
                alphas.append(a)
                q = [qi - a * yi for qi, yi in zip(q, y_i)]
            r = [h0 * qi for qi in q]
            for (s_i, y_i, rho_i), a in zip(pairs, reversed(alphas)):
                b = rho_i * _dot(y_i, r)
                r = [ri + (a - b) * si for ri, si in zip(r, s_i)]
            d = r
        prev = g
        t = lr * min(1.0, 1 / sum(abs(gi) for gi in g)) if first else lr
        if _dot(g, d) > -tolerance_change:
            continue
        theta = [th + t * di for th, di in zip(theta, d)]
    return theta

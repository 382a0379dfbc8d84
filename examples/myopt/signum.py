"""Signum (Bernstein et al. 2018): sign descent with momentum, as a plain torch optimizer.

    m = β·m + (1 - β)·g        (m starts at 0)
    θ = θ - lr·(sign(m) + wd·θ)

Each coordinate reads only its own gradient and state, and the step is ``lr`` times a direction
that does not depend on lr: lr-affine and elementwise, so the suite may stack it (after checking).
"""
from __future__ import annotations

import torch


class Signum(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, beta: float = 0.9, weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta}")
        super().__init__(params, {"lr": lr, "beta": beta, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum"] = torch.zeros_like(p)
                m = state["momentum"]
                m.mul_(group["beta"]).add_(p.grad, alpha=1 - group["beta"])
                p.add_(torch.sign(m) + group["weight_decay"] * p, alpha=-group["lr"])
        return loss

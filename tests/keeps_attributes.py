"""An optimizer written as several third-party libraries write theirs, for the snapshot tests.

Its settings and a step counter live in attributes (``self.beta``, ``self.steps``), not in
``defaults`` or ``param_groups``, so ``copy.deepcopy`` (which keeps only what
``torch.optim.Optimizer.__getstate__`` pickles) loses them; its momentum is kept in float64
whatever the parameters' dtype (``load_state_dict`` would cast it); with ``noise > 0`` it adds
noise drawn from torch's global generator. The tests bring it in by YAML (:data:`YAML`), like a
user's (``PYTHONPATH`` holds ``tests/``).
"""
from __future__ import annotations

import torch

YAML = """name: attrmom
cls: keeps_attributes.AttributeMomentum
lr_default: 0.05
lr_range: [1.0e-4, 1.0]
lr_affine: true
elementwise: true
bounds: {beta: [0.0, 1.0, true, false], noise: [0.0, 1.0]}
beta: 0.9
noise: 0.0
"""


class AttributeMomentum(torch.optim.Optimizer):
    """Bias-corrected momentum: ``m = β·m + g`` (float64), ``θ -= lr·(m·(1-β)/(1-β^t) + noise·ξ)``,
    ``ξ ~ N(0, 1)``, ``t`` counted in ``self.steps``."""

    def __init__(self, params, lr: float = 0.01, beta: float = 0.9, noise: float = 0.0):
        super().__init__(params, {"lr": lr})
        self.beta, self.noise = beta, noise  # read in step(): lost by a deep copy
        self.steps = 0  # changes at every step

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.steps += 1
        correction = (1 - self.beta) / (1 - self.beta ** self.steps)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum"] = torch.zeros_like(p, dtype=torch.float64)
                m = state["momentum"]
                m.mul_(self.beta).add_(p.grad.double())
                update = (m * correction).to(p.dtype)
                if self.noise:
                    update.add_(torch.randn_like(p), alpha=self.noise)
                p.sub_(group["lr"] * update)
        return loss

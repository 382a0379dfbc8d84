"""What an optimizer costs, measured without training: ``opt.step()`` alone on fixed gradients and
the bytes of its state. The conformance check (``suite.run.conformance``) compares them with an
entry's declarations; the benchmarks (``suite.bench``) time and record them.

**Optimizer state** is the tensors in ``optimizer.state_dict()["state"]`` (those in lists too:
L-BFGS keeps its curvature pairs in lists). The scalar ones - ``step`` counters (one per
parameter tensor for Adagrad, RMSprop, Adam, AdamW and most others; 4 bytes each in float32)
and NAdam's μ product - are reported apart as ``step_bytes``: they grow with the number of
parameter *tensors*, not parameters, so ``state_bytes`` (without them) is an exact multiple of
the parameter bytes (0x SGD, 1x momentum/Nesterov/Adagrad/RMSprop/Lion, 2x Adam/AdamW and
their relatives) or, for Adafactor's factored matrices, rows + columns.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from suite.optim.build import build_optimizer
from suite.optim.registry import get_spec


def optimizer_step(model: nn.Module, optimizer: str, impl: str, device: torch.device,
                   lr: float = 1e-3, seed: int = 0) -> tuple[Callable[[], None], torch.optim.Optimizer, str]:
    """``opt.step()`` alone on fixed random gradients: the optimizer's state-update cost (an
    optimizer that evaluates the loss itself gets a closure that hands it the same gradients)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    params = list(model.parameters())
    grads = [torch.randn(p.shape, generator=gen, device=device, dtype=p.dtype) * 1e-3 for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    opt, impl = build_optimizer(optimizer, params, lr, {}, impl)
    if not get_spec(optimizer).closure:
        return opt.step, opt, impl

    def closure() -> torch.Tensor:
        for p, g in zip(params, grads):
            p.grad = g
        return torch.zeros((), device=device)

    return (lambda: opt.step(closure)), opt, impl


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def state_bytes(opt: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of the optimizer's state tensors, with the scalar ones (step counters) apart."""
    state, steps = 0, 0
    for per_param in opt.state_dict()["state"].values():
        for key, value in per_param.items():
            for tensor in value if isinstance(value, (list, tuple)) else [value]:
                if not isinstance(tensor, torch.Tensor):
                    continue  # e.g. SGD's momentum_buffer=None before its first step
                size = tensor.numel() * tensor.element_size()
                if tensor.dim() == 0 or (key == "step" and tensor.numel() == 1):
                    steps += size
                else:
                    state += size
    return {"state_bytes": state, "step_bytes": steps}

"""A quick stacked-vs-separate check for an optimizer that declares stacking exact.

The suite's own entries are checked by the stacked-training tests; a user's optimizer only by
its YAML's word. Before one is ever stacked (and in ``suite-check-optimizer``), two
configurations of a tiny float64 tiny_mlp (different seeds and learning rates) take a few
full-batch steps as one stack (:class:`suite.train.stack_optim.Stack`, the trainer's own) and as
two ordinary models with their own optimizers; their parameters must agree to rounding.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from suite.optim.build import build_optimizer
from suite.optim.registry import get_spec
from suite.tasks import build_task
from suite.train.stack_models import stack_models, stacked_loss
from suite.train.stack_optim import Stack
from suite.types import RunSpec

STEPS, RTOL, ATOL = 8, 1e-7, 1e-10
_VERDICTS: dict[tuple[str, str], str | None] = {}


def stacking_parity(optimizer: str, hparams: Mapping[str, Any]) -> str | None:
    """None if K = 2 stacked steps equal separate ones, else what differs (cached per process)."""
    key = (optimizer, repr(sorted(hparams.items())))
    if key not in _VERDICTS:
        _VERDICTS[key] = _check(optimizer, dict(hparams))
    return _VERDICTS[key]


def _check(optimizer: str, hparams: dict[str, Any]) -> str | None:
    task = build_task({"name": "tiny_mlp", "n": 32, "n_val": 4, "n_test": 4, "hidden": 4}).to(
        torch.device("cpu"), torch.float64)
    lr = get_spec(optimizer).lr_default
    seeds, lrs = (0, 1), (lr, lr / 4)
    spec = RunSpec(task=task.name, optimizer=optimizer, hparams=hparams, lr=lr, batch_size=task.n_train,
                   dtype="float64", impl="forloop")
    models = [task.make_model(s).double() for s in seeds]
    stack = Stack(stack_models([task.make_model(s).double() for s in seeds]), lrs, spec)
    opts = [build_optimizer(optimizer, m.parameters(), lr_k, hparams, "forloop")[0] for m, lr_k in zip(models, lrs)]
    loss = stacked_loss(task.loss)
    x, y = task.train.x, task.train.y
    for _ in range(STEPS):
        stack.opt.zero_grad(set_to_none=True)
        loss(stack.model(x, True), y, True).sum().backward()
        stack.step()
        for model, opt in zip(models, opts):
            opt.zero_grad(set_to_none=True)
            task.loss(model(x), y).backward()
            opt.step()
    for k, model in enumerate(models):
        stacked = stack.model.config_state(k)
        for name, want in model.state_dict().items():
            got = stacked[name]
            if not torch.isfinite(want).all():
                return f"configuration {k} ({name}) is not finite after {STEPS} steps at lr {lrs[k]:.3g}"
            if not torch.allclose(got, want, rtol=RTOL, atol=ATOL):
                diff = (got - want).abs().max().item()
                return (f"K=2 stacked steps differ from separate runs after {STEPS} steps (configuration {k}, "
                        f"{name}: max difference {diff:.2e}, tolerance rtol {RTOL:g}): the step is not lr-affine "
                        f"or not elementwise")
    return None

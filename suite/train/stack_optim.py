"""The live stack of K configurations with its ONE real optimizer and per-configuration learning rates.

Why one optimizer stepped at lr = 1 is exact
--------------------------------------------
An optimizer entry that declares ``lr_affine`` (``suite.optim.registry``; the tutorials' seven:
SGD with or without (Nesterov) momentum, Adagrad, RMSprop, Adam, AdamW) makes a step of the form

    θ' = θ - lr·U(θ, g, s) - lr·wd·θ      s' = S(θ, g, s)

where the direction ``U`` and the state update ``S`` (momentum buffer ``v``, Adagrad's sum,
RMSprop's ``s``, Adam's ``m``, ``s`` and step count) do not involve lr; the last term is
AdamW's decoupled decay ``θ *= 1 - lr·wd`` (coupled decay ``g += wd·θ`` lives inside ``U`` and
``S``). So θ' is affine in lr: ``θ' = θ + lr·Δ`` with ``Δ = -U - wd·θ``, and the new state does
not depend on lr at all. :class:`Stack` therefore steps the torch optimizer at ``lr = 1``
(giving ``θ₁ = θ + Δ`` and the exact new state) and then sets, per configuration k,

    θ' = θ + lr_k·(θ₁ - θ)        (``torch.lerp(θ, θ₁, lr_k)``)

which is the configuration's own update, exact in real arithmetic; in floating point it differs
from the unstacked step by rounding only (the stacked-training tests check 1e-9 in float64). The
optimizer is the real one, with the implementation the single run would use (fused where torch
has it). Entries must also declare ``elementwise`` (no norms or factorizations across a tensor,
state shaped like the parameter), since K configurations share each stacked tensor; entries
that do not declare both (e.g. L-BFGS, Adafactor, Muon) are trained unstacked.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch

from suite.optim.build import build_optimizer
from suite.optim.restore import restore_optimizer
from suite.train.schedule import start_schedule
from suite.train.stack_models import Stacked
from suite.types import RunSpec


class Stack:
    """K configurations: their stacked model and one optimizer stepped at lr = 1.

    All parameters live in one flat buffer (each parameter a contiguous view of it), so the
    per-configuration scaling of the update is one ``lerp`` over the whole model however many
    parameter tensors it has. ``lrs`` are per configuration, in the model's order.

    A learning-rate schedule (``factor``, common to the stack) is a ``LambdaLR`` on the one
    optimizer: it steps at lr = f(t) instead of 1, so each configuration moves by
    ``lr_k·f(t)·Δ``, its own scheduled step. ``steps_done`` starts it that many steps in (a copy).
    """

    def __init__(self, model: Stacked, lrs: Sequence[float], spec: RunSpec,
                 factor: Callable[[int], float] | None = None, steps_done: int = 0):
        self.model, self.lrs, self.spec, self.factor = model, list(lrs), spec, factor
        self._flatten()
        self.opt, self.impl = build_optimizer(spec.optimizer, list(model.parameters()), 1.0, spec.hparams, spec.impl)
        self.scheduler = start_schedule(self.opt, factor, steps_done)

    @torch.no_grad()
    def _flatten(self) -> None:
        """Put every parameter into one flat buffer (each a view of its slice)."""
        params = list(self.model.parameters())
        k, ref = len(self.lrs), params[0]
        self.flat = torch.empty(sum(p.numel() for p in params), dtype=ref.dtype, device=ref.device)
        offset = 0
        for p in params:
            view = self.flat[offset:offset + p.numel()]
            view.copy_(p.detach().reshape(-1))
            p.data = view.view_as(p)  # the parameter now aliases its slice of the flat buffer
            offset += p.numel()
        self.snapshot = torch.empty_like(self.flat)
        lr = torch.tensor(self.lrs, dtype=ref.dtype, device=ref.device)
        # Configuration-major layout: each parameter's block k belongs to configuration k.
        self.weight = torch.cat([lr.repeat_interleave(p.numel() // k) for p in params])

    def clone(self) -> Stack:
        """An independent copy in the same state (parameters, the whole optimizer, schedule): a
        fresh stack over a copy of the model, given the optimizer's state as
        :func:`suite.optim.restore.restore_optimizer` restores it (a deep copy would lose the
        optimizer's attributes)."""
        done = self.scheduler.last_epoch if self.scheduler is not None else 0
        twin = Stack(copy.deepcopy(self.model), self.lrs, self.spec, self.factor, done)
        restore_optimizer(self.opt, twin.opt)
        return twin

    def __len__(self) -> int:
        return len(self.lrs)

    def step(self) -> None:
        """One optimizer step of every configuration, each at its own lr (see the module doc)."""
        self.snapshot.copy_(self.flat)
        self.opt.step()  # at lr = 1 (or the schedule's factor): θ₁ = θ + Δ
        torch.lerp(self.snapshot, self.flat, self.weight, out=self.flat)  # θ + lr_k·Δ
        if self.scheduler is not None:
            self.scheduler.step()

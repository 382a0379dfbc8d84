"""The pieces of a stacked training step: the live stack with its one optimizer, batches, evaluation.

Per-configuration learning rates with ONE real ``torch.optim`` optimizer
-----------------------------------------------------------------------
Every registered optimizer (SGD with or without (Nesterov) momentum, Adagrad, RMSprop, Adam,
AdamW; see ``suite/optimizers.py``) makes a step of the form

    θ' = θ - lr·U(θ, g, s) - lr·wd·θ      s' = S(θ, g, s)

where the direction ``U`` and the state update ``S`` (momentum buffer ``v``, Adagrad's sum,
RMSprop's ``s``, Adam's ``m``, ``s`` and step count) do not involve lr; the last term is
AdamW's decoupled decay ``θ *= 1 - lr·wd`` (coupled decay ``g += wd·θ`` lives inside ``U`` and
``S``). So θ' is affine in lr: ``θ' = θ + lr·Δ`` with ``Δ = -U - wd·θ``, and the new state does
not depend on lr at all. :class:`Stack` therefore steps the torch optimizer at ``lr = 1``
(giving ``θ₁ = θ + Δ`` and the exact new state) and then sets, per configuration k,

    θ' = θ + lr_k·(θ₁ - θ)        (``torch.lerp(θ, θ₁, lr_k)``)

which is the configuration's own update, exact in real arithmetic; in floating point it differs
from the unstacked step by rounding only (tests/test_stacked.py checks 1e-9 in float64). The
optimizer is the real one, with the implementation the single run would use (fused where torch
has it). Optimizers not known to be affine in lr (e.g. Rprop, ASGD, L-BFGS) are not stacked.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from suite.optimizers import build_optimizer, get_spec
from suite.stacked_models import Stacked
from suite.train import BatchStream, micro_batches
from suite.types import RunSpec, Split, Task

# torch.optim classes whose step is affine in lr with an lr-free state update (argument above).
LR_AFFINE = (torch.optim.SGD, torch.optim.Adagrad, torch.optim.RMSprop, torch.optim.Adam, torch.optim.AdamW)


def lr_affine(optimizer: str) -> bool:
    return issubclass(get_spec(optimizer).torch_cls, LR_AFFINE)


def _replace_tensor(model: nn.Module, name: str, value: Tensor, parameter: bool) -> None:
    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner)
    if parameter:
        setattr(module, leaf, nn.Parameter(value))
    else:
        module.register_buffer(leaf, value)


class Stack:
    """The live configurations ``ids``: their stacked model and one optimizer stepped at lr = 1.

    All parameters live in one flat buffer (each parameter a contiguous view of it), so the
    per-configuration scaling of the update is one ``lerp`` over the whole model however many
    parameter tensors it has. ``lrs`` are per configuration, in the order of ``ids``.
    """

    def __init__(self, model: Stacked, ids: Sequence[int], lrs: Sequence[float], spec: RunSpec):
        self.model, self.ids, self.lrs, self.spec = model, list(ids), list(lrs), spec
        params = list(model.parameters())
        k, ref = len(self.ids), params[0]
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
        self.opt, self.impl = build_optimizer(spec.optimizer, params, 1.0, spec.hparams, spec.impl)

    def __len__(self) -> int:
        return len(self.ids)

    def step(self) -> None:
        """One optimizer step of every configuration, each at its own lr (see the module doc)."""
        self.snapshot.copy_(self.flat)
        self.opt.step()  # at lr = 1: θ₁ = θ + Δ
        torch.lerp(self.snapshot, self.flat, self.weight, out=self.flat)  # θ + lr_k·Δ

    @torch.no_grad()
    def keep(self, positions: Sequence[int]) -> "Stack":
        """A smaller stack of the configurations at ``positions``, with their optimizer state.

        Dropped configurations (diverged, pruned, finished) stop costing compute; the kept ones
        continue exactly: their parameters and state slices are copied unchanged.
        """
        k, pos = len(self.ids), torch.tensor(list(positions), device=self.flat.device)

        def take(t: Tensor) -> Tensor:
            return t.reshape(k, -1)[pos].reshape(len(pos) * (t.shape[0] // k), *t.shape[1:])

        states = []
        for name, p in list(self.model.named_parameters()):
            state = self.opt.state.get(p, {})
            states.append({key: take(v) if torch.is_tensor(v) and v.shape == p.shape else v
                           for key, v in state.items()})
            _replace_tensor(self.model, name, take(p.detach()), parameter=True)
        for name, b in list(self.model.named_buffers()):
            _replace_tensor(self.model, name, take(b), parameter=False)
        stack = Stack(self.model, [self.ids[i] for i in positions], [self.lrs[i] for i in positions], self.spec)
        for p, state in zip(stack.model.parameters(), states):
            if state:
                stack.opt.state[p] = state
        return stack


class StackBatches:
    """Each live configuration's batches: one :class:`BatchStream` per seed.

    Configurations with the same seed see the same batch sequence as their single runs (common
    random numbers). When every live configuration gets the same selector (one seed, or the
    full batch, or equal sequential slices), the batch is passed once as ``shared``; otherwise
    it is gathered per configuration into ``(K, b, ...)``.
    """

    def __init__(self, task: Task, spec: RunSpec, seeds: Sequence[int]):
        self.x, self.y, self.n = task.train.x, task.train.y, task.n_train
        self.k, self.device = spec.accumulation_steps, self.x.device
        self.streams = {s: iter(BatchStream(self.n, spec.batch_size, spec.sampling, s, self.device))
                        for s in dict.fromkeys(seeds)}
        self.keep(seeds)

    def keep(self, seeds: Sequence[int]) -> None:
        """Follow the live configurations' seeds (in stack order); streams no one uses are dropped."""
        self.streams = {s: it for s, it in self.streams.items() if s in set(seeds)}
        order = {s: i for i, s in enumerate(self.streams)}
        self.group = torch.tensor([order[s] for s in seeds], device=self.device)

    def _index(self, sel: slice | Tensor) -> Tensor:
        return torch.arange(*sel.indices(self.n), device=self.device) if isinstance(sel, slice) else sel

    def next(self) -> list[tuple[Tensor, Tensor, bool]]:
        """The next step's micro-batches as ``(x, y, shared)``."""
        sels = [next(it) for it in self.streams.values()]
        first = sels[0]
        if len(sels) == 1 or all(isinstance(s, slice) and s == first for s in sels):
            return [(self.x[p], self.y[p], True) for p in micro_batches(first, self.n, self.k)]
        idx = torch.stack([self._index(s) for s in sels])[self.group]  # (K, b): one gather per step
        return [(self.x[p], self.y[p], False) for p in idx.chunk(self.k, dim=1)]


@torch.no_grad()
def evaluate_stacked(model: Stacked, loss: Callable, task: Task, split: Split, chunk: int,
                     k: int) -> list[tuple[float, float]]:
    """Each configuration's mean loss (and accuracy, else NaN) over a split; mirrors ``train.evaluate``."""
    n = len(split)
    if n == 0:
        return [(math.nan, math.nan)] * k
    model.eval()
    loss_sum, correct = [0.0] * k, [0] * k
    for i in range(0, n, chunk):
        x, y = split.x[i:i + chunk], split.y[i:i + chunk]
        out = model(x, True)
        # .tolist() syncs; eval is not timed. Summed in Python floats like train.evaluate's .item().
        loss_sum = [s + v * len(x) for s, v in zip(loss_sum, loss(out, y, True).tolist())]
        if task.classifier:
            correct = [c + v for c, v in zip(correct, (out.argmax(-1) == y).sum(1).tolist())]
    model.train()
    return [(s / n, c / n if task.classifier else math.nan) for s, c in zip(loss_sum, correct)]

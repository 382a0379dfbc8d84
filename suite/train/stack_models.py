"""Stacked models: K copies of one task model as one module whose parameters carry a leading K.

``stack_models(models)`` takes K separately initialized models of the same kind (each from
``task.make_model(seed_k)``) and copies their weights into stacked tensors, so slice k starts
exactly where the ordinary run starts. A stacked module maps ``x`` to outputs of shape
``(K, b, ...)``: ``x`` is either one batch for all K (``shared=True``, shape ``(b, ...)``: the
configurations see the same samples) or one batch per configuration (``(K, b, ...)``).

Layout invariant (the stacked trainer relies on it): every stacked parameter is
configuration-major, i.e. ``p.view(K, -1)[k]`` holds configuration k's numbers.

Two ways to stack, chosen per model kind: the model class's own ``stacked`` where it declares
one, else :data:`STACKERS` (keyed by torch's classes):

* hand-written layers (:mod:`suite.tasks.stacking`): ``StackedLinear`` (``baddbmm``),
  ``StackedSequential`` (Linear and element-wise activations), and a task's own, e.g.
  ``suite.tasks.images.StackedCNN`` (the 2c2d net);
* :class:`VmapStack`, ``torch.func.vmap`` over ``functional_call``: works for any model, and is
  the fallback for kinds without hand-written layers. On tiny_mlp (K = 64, CPU) its training
  step is 2-3x slower than the hand-written layers' (``tests/benchmarks/test_stacked_bench.py``),
  so the hand-written layers are the default.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from suite.tasks.parts import mse
from suite.tasks.stacking import NoStackedLayers, Stacked, StackedLinear, StackedSequential
from suite.types import ConfigError

class VmapStack(Stacked):
    """Any model: ``torch.func.vmap`` of ``functional_call`` over stacked parameters and buffers."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        params, buffers = stack_module_state(models)
        # Registered under flat names (module attribute names may not contain dots).
        self._names = ({n: n.replace(".", "__") for n in params}, {n: "buf__" + n.replace(".", "__") for n in buffers})
        for name, flat in self._names[0].items():
            self.register_parameter(flat, nn.Parameter(params[name]))
        for name, flat in self._names[1].items():
            self.register_buffer(flat, buffers[name])
        # The structure only, on the meta device; a tuple so it is not registered as a submodule.
        self._template = (copy.deepcopy(models[0]).to("meta"),)

    def _tensors(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return tuple({n: getattr(self, flat) for n, flat in names.items()} for names in self._names)

    def forward(self, x: Tensor, shared: bool) -> Tensor:
        base = self._template[0]

        def one(params, buffers, xb):
            return functional_call(base, (params, buffers), (xb,))

        return vmap(one, in_dims=(0, 0, None if shared else 0))(*self._tensors(), x)

    def config_state(self, k: int) -> dict[str, Tensor]:
        params, buffers = self._tensors()
        return {n: t[k] for n, t in {**params, **buffers}.items()}


# torch's model classes -> stacked builder; looked up along the class's MRO (fashion's MLP is a
# Sequential). A task's own model class declares its builder as ``stacked`` (suite.tasks.stacking).
STACKERS: dict[type, Callable[[list], Stacked]] = {
    nn.Linear: StackedLinear,
    nn.Sequential: StackedSequential,
}
METHODS = ("auto", "layers", "vmap")


def stack_models(models: list[nn.Module], method: str = "auto") -> Stacked:
    """One stacked module from K models of one kind; slice k holds a copy of ``models[k]``'s weights.

    ``method``: ``layers`` (hand-written, error if the kind has none), ``vmap``, or ``auto``
    (hand-written where available, else vmap).
    """
    if method not in METHODS:
        raise ConfigError(f"stacking method {method!r} is invalid; valid: {', '.join(METHODS)}.")
    kinds = {type(m) for m in models}
    if len(kinds) != 1:
        raise ConfigError(f"cannot stack models of different kinds: {sorted(k.__name__ for k in kinds)}.")
    builder = getattr(type(models[0]), "stacked", None) or next(
        (STACKERS[c] for c in type(models[0]).__mro__ if c in STACKERS), None)
    if method != "vmap":
        try:
            if builder is None:
                raise NoStackedLayers(f"no hand-written stacked layers for {type(models[0]).__name__}; "
                                      f"use method=vmap or auto.")
            return builder(models)
        except NoStackedLayers:
            if method == "layers":
                raise
    return VmapStack(models)


def unstack(stacked: Stacked, k: int, template: nn.Module) -> nn.Module:
    """Configuration k as an ordinary model: ``template`` (same kind) loaded with slice k's weights."""
    with torch.no_grad():
        template.load_state_dict({n: t.detach().clone() for n, t in stacked.config_state(k).items()})
    return template


def stacked_mse(out: Tensor, y: Tensor) -> Tensor:
    return (out - y).pow(2).mean(dim=tuple(range(1, out.dim())))


def stacked_cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    k, b = out.shape[:2]
    labels = y.expand(k, b).reshape(-1)
    return F.cross_entropy(out.reshape(k * b, -1), labels, reduction="none").view(k, b).mean(1)


# Task loss -> its stacked form: (K, b, ...) outputs -> (K,) per-configuration means.
STACKED_LOSSES: dict[Callable, Callable[[Tensor, Tensor], Tensor]] = {
    mse: stacked_mse,
    F.mse_loss: stacked_mse,
    F.cross_entropy: stacked_cross_entropy,
}


def stacked_loss(loss: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor, bool], Tensor]:
    """``f(out, y, shared) -> (K,)``: each configuration's own batch mean of ``loss``.

    Known losses have a hand-written form; any other loss is vmapped (it must be a batch mean).
    """
    if loss in STACKED_LOSSES:
        fast = STACKED_LOSSES[loss]
        return lambda out, y, shared: fast(out, y)
    return lambda out, y, shared: vmap(loss, in_dims=(0, None if shared else 0))(out, y)

"""Stacked models: K copies of one task model as one module whose parameters carry a leading K.

``stack_models(models)`` takes K separately initialized models of the same kind (each from
``task.make_model(seed_k)``) and copies their weights into stacked tensors, so slice k starts
exactly where the ordinary run starts. A stacked module maps ``x`` to outputs of shape
``(K, b, ...)``: ``x`` is either one batch for all K (``shared=True``, shape ``(b, ...)``: the
configurations see the same samples) or one batch per configuration (``(K, b, ...)``).

Layout invariant (the stacked trainer relies on it): every stacked parameter is
configuration-major, i.e. ``p.view(K, -1)[k]`` holds configuration k's numbers.

Two ways to stack, chosen per model kind by :data:`STACKERS` (keyed by the model's class):

* hand-written layers: ``StackedLinear`` (``baddbmm``), ``StackedSequential`` (Linear and
  element-wise activations), ``StackedCNN`` (the 2c2d net: the first conv has K·c1 filters over
  the shared image, the second is a grouped conv with ``groups=K``);
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

from suite.tasks.images import CNN
from suite.tasks.parts import mse
from suite.types import ConfigError

# Parameter-free modules that act element-wise: the same module works on stacked activations.
ELEMENTWISE = (nn.Tanh, nn.ReLU, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.Softplus, nn.Identity)


class NoStackedLayers(ConfigError):
    """The model (or a layer of it) has no hand-written stacked version; ``auto`` then uses vmap."""


class Stacked(nn.Module):
    """Base of the stacked modules: ``forward(x, shared)`` and per-configuration state."""

    keeps_shared = False  # True for layers whose output is still one batch for all K

    def config_state(self, k: int) -> dict[str, Tensor]:
        """Configuration k's tensors, named as in the ordinary model's ``state_dict``."""
        raise NotImplementedError


class StackedLinear(Stacked):
    """K ``nn.Linear(i, o)``: ``weight`` is (K, i, o) (each slice the transposed torch weight)."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        if layers[0].bias is None:
            raise NoStackedLayers("no hand-written stacked version of nn.Linear without bias; use method=vmap or auto.")
        self.weight = nn.Parameter(torch.stack([m.weight.detach().T for m in layers]).contiguous())
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).unsqueeze(1))

    def forward(self, x: Tensor, shared: bool) -> Tensor:
        if self.weight.shape[1] == 1:
            # One input feature: the product is an outer product; an element-wise multiply-add
            # broadcasts (b, 1) or (K, b, 1) against (K, 1, o) and avoids K tiny matmuls (~2x at b=32).
            return torch.addcmul(self.bias, x, self.weight)
        if shared:  # (b, i): broadcast the one batch over K without copying it
            x = x.expand(self.weight.shape[0], *x.shape)
        return torch.baddbmm(self.bias, x, self.weight)

    def config_state(self, k: int) -> dict[str, Tensor]:
        return {"weight": self.weight[k].T, "bias": self.bias[k, 0]}


class Elementwise(Stacked):
    keeps_shared = True

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, shared: bool) -> Tensor:
        return self.module(x)

    def config_state(self, k: int) -> dict[str, Tensor]:
        return {}


class StackedSequential(Stacked):
    """An ``nn.Sequential`` of Linear layers and element-wise activations (the MLPs)."""

    def __init__(self, models: list[nn.Sequential]):
        super().__init__()
        self.layers = nn.ModuleList(_stack_layer([m[i] for m in models]) for i in range(len(models[0])))

    def forward(self, x: Tensor, shared: bool) -> Tensor:
        for layer in self.layers:
            x = layer(x, shared)
            shared = shared and layer.keeps_shared
        return x

    def config_state(self, k: int) -> dict[str, Tensor]:
        return {f"{i}.{name}": t for i, layer in enumerate(self.layers) for name, t in layer.config_state(k).items()}


def _stack_layer(layers: list[nn.Module]) -> Stacked:
    if isinstance(layers[0], nn.Linear):
        return StackedLinear(layers)
    if isinstance(layers[0], ELEMENTWISE):
        return Elementwise(layers[0])
    raise NoStackedLayers(f"no hand-written stacked version of {type(layers[0]).__name__} (inside an nn.Sequential); "
                          f"use method=vmap or auto.")


class StackedCNN(Stacked):
    """K 2c2d CNNs: conv1 is one conv with K·c1 filters, conv2 a grouped conv (``groups=K``)."""

    def __init__(self, models: list[CNN]):
        super().__init__()
        m0 = models[0]
        self.side, self.c1, self.c2 = m0.side, m0.conv1.out_channels, m0.conv2.out_channels
        self.w1 = nn.Parameter(torch.cat([m.conv1.weight.detach() for m in models]))  # (K·c1, 1, 5, 5)
        self.b1 = nn.Parameter(torch.cat([m.conv1.bias.detach() for m in models]))
        self.w2 = nn.Parameter(torch.cat([m.conv2.weight.detach() for m in models]))  # (K·c2, c1, 5, 5)
        self.b2 = nn.Parameter(torch.cat([m.conv2.bias.detach() for m in models]))
        self.fc1 = StackedLinear([m.fc1 for m in models])
        self.fc2 = StackedLinear([m.fc2 for m in models])

    def forward(self, x: Tensor, shared: bool) -> Tensor:
        k, s = self.w1.shape[0] // self.c1, self.side
        if shared:  # (b, s·s) -> (b, 1, s, s): every filter of every configuration sees the image
            x = F.conv2d(x.view(-1, 1, s, s), self.w1, self.b1, padding=2)
        else:  # (K, b, s·s) -> (b, K, s, s): configuration k's image is input channel k
            x = F.conv2d(x.transpose(0, 1).reshape(-1, k, s, s), self.w1, self.b1, padding=2, groups=k)
        x = F.max_pool2d(F.relu(x), 2)
        x = F.max_pool2d(F.relu(F.conv2d(x, self.w2, self.b2, padding=2, groups=k)), 2)
        x = x.reshape(x.shape[0], k, -1).transpose(0, 1)  # (K, b, c2·(s/4)²), channel-major like flatten
        return self.fc2(F.relu(self.fc1(x, False)), False)

    def config_state(self, k: int) -> dict[str, Tensor]:
        c1, c2 = self.c1, self.c2
        state = {"conv1.weight": self.w1[k * c1:(k + 1) * c1], "conv1.bias": self.b1[k * c1:(k + 1) * c1],
                 "conv2.weight": self.w2[k * c2:(k + 1) * c2], "conv2.bias": self.b2[k * c2:(k + 1) * c2]}
        for name in ("fc1", "fc2"):
            state.update({f"{name}.{key}": t for key, t in getattr(self, name).config_state(k).items()})
        return state


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


# Model class -> stacked builder; looked up along the class's MRO (fashion's MLP is a Sequential).
STACKERS: dict[type, Callable[[list], Stacked]] = {
    nn.Linear: StackedLinear,
    nn.Sequential: StackedSequential,
    CNN: StackedCNN,
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
    builder = next((STACKERS[c] for c in type(models[0]).__mro__ if c in STACKERS), None)
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

"""Hand-written stacked layers: K copies of a layer as one module whose parameters carry a leading
K (configuration-major: ``p.view(K, -1)[k]`` is configuration k's). ``forward(x, shared)`` maps
one batch for all K (``shared``) or one per configuration to ``(K, b, ...)`` outputs;
``config_state(k)`` gives configuration k's tensors under the ordinary model's names.

The stacked engine (``suite.train.stack_models``) stacks torch's ``nn.Linear`` and
``nn.Sequential`` with these; a task's own model class declares its stacked version as a static
``stacked(models)`` built from them (``suite.tasks.images.CNN``), or is stacked through vmap.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

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

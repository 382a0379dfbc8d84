"""Building a registry entry's real optimizer (the one module of ``suite.optim`` that imports torch)."""
from __future__ import annotations

import importlib
from typing import Any, Iterable, Mapping

import torch

from suite.optim.registry import OptimizerSpec, check_lr, choose_impl, get_spec, resolve_hparams
from suite.types import ConfigError

IMPL_FLAGS = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def optimizer_class(spec: OptimizerSpec) -> type[torch.optim.Optimizer]:
    """The class named by ``spec.cls`` (``"torch.optim.SGD"``), checked to be a torch optimizer."""
    module, _, name = spec.cls.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"optimizer {spec.name!r}: cannot import {spec.cls} ({e}).") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"optimizer {spec.name!r}: {spec.cls} is not a torch.optim.Optimizer subclass.")
    return cls


def build_optimizer(
    name: str, params: Iterable[torch.Tensor], lr: float, hparams: Mapping[str, Any], impl: str = "auto"
) -> tuple[torch.optim.Optimizer, str]:
    """Return the torch optimizer and the implementation that actually runs."""
    spec = get_spec(name)
    impl = choose_impl(spec, impl)
    flags = IMPL_FLAGS[impl] if spec.foreach or impl != "forloop" else {}
    kwargs = spec.constructor_kwargs(resolve_hparams(name, hparams))
    return optimizer_class(spec)(params, lr=check_lr(lr), **kwargs, **flags), impl

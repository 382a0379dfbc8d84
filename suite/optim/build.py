"""Building a registry entry's real optimizer (the modules of ``suite.optim`` that import torch:
this one and ``muon``), and checking a user's optimizer class before any work."""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Iterable, Mapping

import torch

from suite.optim.registry import EXTRA, OptimizerSpec, check_lr, choose_impl, get_spec, resolve_hparams
from suite.types import ConfigError

IMPL_FLAGS = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def _where(spec: OptimizerSpec) -> str:
    return f"optimizer {spec.name!r}" + (f" (optimizer YAML {spec.source})" if spec.external else "")


def optimizer_class(spec: OptimizerSpec, impl: str = "forloop") -> type[torch.optim.Optimizer]:
    """The class that runs ``impl`` (``spec.cls``, e.g. ``"torch.optim.SGD"``, unless the entry
    names a class for that implementation), checked to be a torch optimizer."""
    path = spec.class_path(impl)
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        if spec.package and e.name and path.startswith(e.name.split(".")[0]):
            raise ConfigError(
                f"optimizer {spec.name!r} needs the {spec.package} package, which is not installed. Install the "
                f"suite's optional optimizers: pip install -e '.[{EXTRA}]' (or pip install {spec.package})."
            ) from None
        raise ConfigError(f"{_where(spec)}: cannot import {path} ({e}). Fix: make its package importable "
                          f"(PYTHONPATH or pip install), or correct cls:.") from None
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{_where(spec)}: cannot import {path} ({e}). Fix: correct cls: (module path and "
                          f"class name).") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"{_where(spec)}: {path} is not a torch.optim.Optimizer subclass. Fix: point cls: at "
                          f"an optimizer class (class MyOpt(torch.optim.Optimizer)).")
    return cls


def _flags(spec: OptimizerSpec, impl: str) -> dict[str, bool]:
    """Constructor flags for ``impl``: none where the implementation is a class of its own, or
    where the class takes no ``foreach`` (its for-loop is all it has)."""
    if impl in spec.impl_cls or (impl == "forloop" and ("foreach" in spec.impl_cls or not spec.foreach)):
        return {}
    return IMPL_FLAGS[impl]


def build_optimizer(
    name: str, params: Iterable[torch.Tensor], lr: float, hparams: Mapping[str, Any], impl: str = "auto"
) -> tuple[torch.optim.Optimizer, str]:
    """Return the torch optimizer and the implementation that actually runs (in train mode, for
    entries with train/eval modes)."""
    spec = get_spec(name)
    impl = choose_impl(spec, impl)
    kwargs = spec.constructor_kwargs(resolve_hparams(name, hparams))
    opt = optimizer_class(spec, impl)(params, lr=check_lr(lr), **kwargs, **_flags(spec, impl))
    if spec.eval_mode:
        opt.train()  # schedule-free: the parameters hold the training point y from here on
    return opt, impl


def check_external(spec: OptimizerSpec) -> None:
    """A user's entry, before any work: its class imports, is an Optimizer, takes the YAML's
    arguments by name, and builds at its default lr. One clear error naming the file otherwise."""
    for impl in ["forloop"] + ["foreach"] * spec.foreach + ["fused"] * spec.fused:
        cls = optimizer_class(spec, impl)
        kwargs = {**spec.constructor_kwargs(spec.defaults), **_flags(spec, impl)}
        try:
            signature = inspect.signature(cls.__init__)
        except (TypeError, ValueError):  # a builtin or C signature: the build below decides
            signature = None
        if signature and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            unknown = sorted(set(kwargs) - set(signature.parameters) - {"self"})
            if unknown:
                raise ConfigError(
                    f"{_where(spec)}: {cls.__name__}.__init__ takes no keyword argument {', '.join(unknown)}; it "
                    f"takes: {', '.join(k for k in signature.parameters if k not in ('self', 'params'))}. Fix: "
                    f"rename or remove {', '.join(unknown)} in the YAML (constructor arguments by name; beta1/beta2 "
                    f"are passed as betas)."
                )
        try:
            cls([torch.zeros(2, requires_grad=True)], lr=spec.lr_default, **kwargs)
        except Exception as e:  # noqa: BLE001 - whatever the user's constructor raises, said in one line
            raise ConfigError(f"{_where(spec)}: {cls.__name__}(params, lr={spec.lr_default}, "
                              f"{', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) fails: "
                              f"{type(e).__name__}: {e}. Fix: the YAML's defaults or the class.") from None

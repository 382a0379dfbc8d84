"""Bring your own optimizer: a registry entry from one YAML file, registered for the process.

A user's optimizer is any importable ``torch.optim.Optimizer`` subclass. Its YAML file (a Hydra
``optimizer`` option, e.g. ``conf/optimizer/myopt.yaml`` in a directory given with
``--config-dir``) names the class and declares what the suite must know::

    name: myopt
    cls: myopt.Signum            # import path of the class
    lr_default: 0.01             # lr when none is given (and the tuner's search range below)
    lr_range: [1.0e-4, 1.0]
    lr_affine: true              # optional declarations (all default to false / undeclared, as in a
    elementwise: true            #   registry entry), see suite.optim.spec.OptimizerSpec
    state_per_param: 1
    bounds: {beta: [0.0, 1.0, true, false]}   # valid ranges of hyperparameters the suite does not know
    beta: 0.9                    # its hyperparameters, with their defaults (optimizer.beta=... overrides)
    weight_decay: 0.0

Every key that is not a declaration (:data:`DECLARATIONS`) is a hyperparameter: a number passed
to the constructor by name (``beta1``/``beta2`` as ``betas=(beta1, beta2)``, as torch.optim
does); constructor arguments that are not numbers go under ``fixed:``. The composed config
carries all of it, so every process that prepares a run (``suite-train``, ``suite-tune``, each
cell of ``suite-study``, in its worker too) registers the same entry from it: one mechanism.

This module is plain data and checks (no torch); importing the class and building it once
happens in ``suite.optim.build.check_external``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from suite.optim.registry import BOUNDS, OPTIMIZERS
from suite.optim.spec import FAMILIES, OptimizerSpec
from suite.types import ConfigError

FLAGS = ("lr_affine", "elementwise", "fused", "foreach", "step_counter", "closure", "eval_mode", "full_batch_only",
         "factored")
DECLARATIONS = ("name", "impl", "cls", "lr_default", "lr_range", "fixed", "bounds", "integers", "impl_cls",
                "state_per_param", "extra_scalars", "family", "doc", *FLAGS)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def spec_from_options(options: Mapping[str, Any], source: str) -> OptimizerSpec:
    """The :class:`OptimizerSpec` an optimizer YAML declares; one clear error per mistake, naming
    ``source`` (the file) and the fix."""
    o = dict(options)
    name = o.get("name")

    def bad(what: str, fix: str) -> ConfigError:
        return ConfigError(f"optimizer YAML {source}: {what}. Fix: {fix}.")

    if not isinstance(name, str) or not name.isidentifier():
        raise bad(f"name={name!r} is not a valid optimizer name", "name: <letters, digits, _> equal to the file's name")
    if name in OPTIMIZERS and not OPTIMIZERS[name].external:
        raise bad(f"name {name!r} is a built-in optimizer of the suite", "give yours another name (file and name:)")
    cls = o.get("cls")
    if not isinstance(cls, str) or "." not in cls:
        raise bad(f"cls={cls!r} is not an import path", "cls: <package.module.ClassName> of a torch.optim.Optimizer "
                                                       "subclass, importable (PYTHONPATH or pip install)")
    lr_range = o.get("lr_range")
    if not (isinstance(lr_range, (list, tuple)) and len(lr_range) == 2 and all(map(_number, lr_range))):
        raise bad(f"lr_range={lr_range!r} is not a [low, high] pair", "lr_range: [1.0e-4, 1.0] (searched on a log "
                                                                       "scale)")
    lo, hi = (float(v) for v in lr_range)
    if not 0 < lo < hi:
        raise bad(f"lr_range=[{lo}, {hi}] must satisfy 0 < low < high", f"e.g. lr_range: [{min(lo, hi) or 1e-4}, "
                                                                         f"{max(lo, hi) or 1.0}] with low < high")
    lr_default = o.get("lr_default")
    if not _number(lr_default) or not lo < lr_default < hi:
        raise bad(f"lr_default={lr_default!r} must be a number inside lr_range ({lo}, {hi})",
                  "set lr_default between the ends of lr_range")
    for flag in FLAGS:
        if flag in o and not isinstance(o[flag], bool):
            raise bad(f"{flag}={o[flag]!r} must be true or false", f"{flag}: true")
    state = o.get("state_per_param")
    if state is not None and (isinstance(state, bool) or not isinstance(state, int) or state < 0):
        raise bad(f"state_per_param={state!r} must be an integer >= 0", "state_per_param: <state tensors of a "
                                                                          "parameter's size, per parameter>, or leave it out")
    family = o.get("family", "external")
    if family not in FAMILIES:
        raise bad(f"family={family!r} is unknown", f"one of {', '.join(FAMILIES)} (or leave it out)")
    bounds = {}
    for key, value in (o.get("bounds") or {}).items():
        ok = isinstance(value, (list, tuple)) and len(value) in (2, 4) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) for v in value[:2]) and all(
            isinstance(v, bool) for v in value[2:])
        if not ok:
            raise bad(f"bounds.{key}={value!r} is not [low, high] or [low, high, low_inclusive, high_inclusive]",
                      f"bounds: {{{key}: [0.0, 1.0]}} (both ends included) or {{{key}: [0.0, 1.0, true, false]}}")
        if not value[0] < value[1]:
            raise bad(f"bounds.{key}=[{value[0]}, {value[1]}] has low >= high", f"write bounds.{key} as [low, high] "
                                                                                   f"with low < high")
        bounds[key] = (float(value[0]), float(value[1]), *(value[2:] if len(value) == 4 else (True, True)))
    hparams = {k: v for k, v in o.items() if k not in DECLARATIONS}
    for key, value in hparams.items():
        if not _number(value):
            raise bad(f"hyperparameter {key}={value!r} is not a number", f"put constructor arguments that are not "
                                                                          f"numbers under fixed: ({{{key}: ...}})")
        if key not in bounds and key not in BOUNDS:
            raise bad(f"hyperparameter {key!r} has no valid range", f"declare it: bounds: {{{key}: [low, high]}} "
                                                                    f"(the suite knows {', '.join(BOUNDS)})")
        low, high, low_in, high_in = bounds.get(key) or BOUNDS[key]
        if not ((value >= low if low_in else value > low) and (value <= high if high_in else value < high)):
            raise bad(f"the default {key}={value} lies outside its range {[low, high]}", f"change {key} or bounds.{key}")
    integers = tuple(o.get("integers") or ())
    stray = [k for k in integers if k not in hparams]
    if stray:
        raise bad(f"integers names {', '.join(map(str, stray))}, which are not hyperparameters of this file",
                  "list only hyperparameters given in the file")
    return OptimizerSpec(
        name=name, cls=cls, defaults=hparams, lr_default=float(lr_default), lr_range=(lo, hi),
        fixed=dict(o.get("fixed") or {}), bounds=bounds, integers=integers, impl_cls=dict(o.get("impl_cls") or {}),
        state_per_param=state, extra_scalars=int(o.get("extra_scalars") or 0), family=family,
        doc=str(o.get("doc") or f"{cls} (external optimizer from {source})"), source=source,
        **{flag: o[flag] for flag in FLAGS if flag in o},  # undeclared: OptimizerSpec's default, as for a built-in
    )


def register_external(options: Mapping[str, Any], source: str) -> OptimizerSpec:
    """Build the entry from its YAML options and register it for this process (a later
    registration of the same name replaces it: the composed config is the truth)."""
    spec = spec_from_options(options, source)
    OPTIMIZERS[spec.name] = spec
    return spec


def is_external(options: Mapping[str, Any]) -> bool:
    """Whether a composed ``optimizer`` config is a user's YAML (it names a class)."""
    return "cls" in options

"""Restoring an optimizer's whole state onto a fresh one: how a run's copy (the snapshot a target's
replay starts from, ``suite.train``) keeps any optimizer the suite accepts, built in or brought in.

``copy.deepcopy`` is not enough: ``torch.optim.Optimizer.__getstate__`` keeps only ``defaults``,
``state`` and ``param_groups``, so an optimizer that keeps settings or counters as attributes
(lion-pytorch's ``update_fn``, L-BFGS's ``_params``, the Muon composite's ``parts``, a user's
``self.beta``) loses them in the copy and fails in its next ``step``. :func:`restore_optimizer`
instead takes a *fresh* optimizer, built from the same registry entry and settings over the
copy's parameters (so everything its constructor sets up, such as bound functions and composite
parts, is its own), and gives it the source's state:

1. ``load_state_dict`` of a deep copy of the source's ``state_dict`` (the optimizer's own restore,
   which also re-points composites such as Muon's parts at the loaded groups);
2. the per-parameter state tensors in the dtype the source kept them (``load_state_dict`` casts
   floating state to the parameter's dtype, e.g. float64 accumulators of float32 parameters);
3. the source's own instance attributes that are data (numbers, strings, tensors, random
   generators and containers of them: settings, step counters, buffers), deep-copied with every
   parameter replaced by its counterpart; nested optimizers (a composite's parts) get theirs the
   same way. Attributes that are not data (functions, bound methods such as the step wrapper an
   lr scheduler installs, modules) are structure the fresh optimizer's constructor built for itself;
4. the parameters' values, in case the fresh optimizer's constructor touched them.

What it cannot see: state an optimizer keeps outside itself (module globals) or in attributes of
objects that are not data; ``suite-check-optimizer`` compares a copy's next steps with the
original's bit for bit, so such an optimizer fails a check instead of a study.
"""
from __future__ import annotations

import copy
import functools
import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.optim import Optimizer

ATOMS = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.Generator, random.Random,
         np.ndarray, np.generic, np.random.Generator)


@functools.cache
def torch_own() -> frozenset[str]:
    """What every torch optimizer keeps for itself (restored by load_state_dict, or torch's
    bookkeeping). Found on first use: building an optimizer imports torch._dynamo (about a second),
    which a process that never trains (a study's driver, a report) does not need."""
    return frozenset(vars(Optimizer([torch.zeros(1, requires_grad=True)], {})))


def parameters(opt: Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters in its groups' order."""
    return [p for group in opt.param_groups for p in group["params"]]


def restore_optimizer(source: Optimizer, fresh: Optimizer) -> Optimizer:
    """Give ``fresh`` (same class and settings as ``source``, over copies of its parameters in the
    same order) the whole state of ``source``, so its next steps equal ``source``'s; return it."""
    old, new = parameters(source), parameters(fresh)
    if type(source) is not type(fresh) or [p.shape for p in old] != [p.shape for p in new]:
        raise ValueError(f"restore_optimizer needs a fresh {type(source).__name__} over parameters shaped like the "
                         f"source's, got a {type(fresh).__name__} over {[tuple(p.shape) for p in new]}")
    memo: dict[int, Any] = {id(o): n for o, n in zip(old, new)}
    fresh.load_state_dict(copy.deepcopy(source.state_dict()))
    for o, n in zip(old, new):
        for key, value in source.state.get(o, {}).items():
            loaded = fresh.state[n].get(key)
            if torch.is_tensor(value) and torch.is_tensor(loaded) and loaded.dtype != value.dtype:
                fresh.state[n][key] = value.detach().clone()
    _carry_attributes(source, fresh, memo)
    with torch.no_grad():
        for o, n in zip(old, new):
            n.copy_(o)
    return fresh


def _carry_attributes(source: Optimizer, fresh: Optimizer, memo: dict[int, Any]) -> None:
    for key, value in vars(source).items():
        if key in torch_own():
            continue
        if is_data(value):
            setattr(fresh, key, copy.deepcopy(value, memo))
            continue
        for inner, mine in _nested_optimizers(value, getattr(fresh, key, None)):
            _carry_attributes(inner, mine, memo)


def is_data(value: Any) -> bool:
    """Numbers, strings, tensors, random generators, and lists, tuples, sets and dicts of them."""
    if isinstance(value, ATOMS):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(is_data(v) for v in value)
    if isinstance(value, dict):
        return all(is_data(k) and is_data(v) for k, v in value.items())
    return False


def _nested_optimizers(value: Any, mine: Any) -> Iterator[tuple[Optimizer, Optimizer]]:
    """Pairs of optimizers at the same place in ``value`` (the source's attribute) and ``mine``
    (the fresh one's): the attribute itself, or the items of a dict, list or tuple of them."""
    if isinstance(value, Optimizer) and type(mine) is type(value):
        yield value, mine
    elif isinstance(value, dict) and isinstance(mine, dict):
        for key in value.keys() & mine.keys():
            yield from _nested_optimizers(value[key], mine[key])
    elif isinstance(value, (list, tuple)) and isinstance(mine, (list, tuple)) and len(value) == len(mine):
        for inner, other in zip(value, mine):
            yield from _nested_optimizers(inner, other)

"""Task registry: name -> :class:`TaskEntry` (its options with defaults, its builder, a small instance).

What lives here: the registry (this file, plain data: it imports no torch, so the report can read
task names without loading it), the builders (``synthetic``, ``images``), the IDX reader (``idx``),
option checks (``options``), the parts builders share (``parts``: seeded initialization, MSE,
predicted labels) and the hand-written stacked layers a model is stacked with (``stacking``). It
may import ``suite.types`` only.

Adding a task is one entry below, its builder, and ``conf/task/<name>.yaml`` holding exactly the
entry's ``defaults`` (a contract test checks it). A model built of torch's ``nn.Linear`` and
``nn.Sequential`` trains stacked on hand-written layers as it is; another model class may declare
its own as a static ``stacked(models)`` (``images.CNN``), else it is stacked through vmap. The
contract tests iterate over this registry's examples (model init depends only on the seed, the
loss is a batch mean, accuracy matches the output shape, autograd matches finite differences,
stacked training equals separate runs), so a new task needs no test edit.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from suite.tasks.options import take
from suite.types import ConfigError, Task


@dataclass(frozen=True)
class TaskEntry:
    name: str
    builder: str  # "module:function"; function(options) -> Task, given every option (defaults filled in)
    defaults: Mapping[str, Any]  # every option and its default; conf/task/<name>.yaml repeats them
    examples: tuple[Mapping[str, Any], ...] = ()  # small instances (option overrides) for the contract tests
    dataset: str | None = None  # IDX dataset read from disk (tests point data_dir at IDX files they write)
    doc: str = ""

    def build(self, options: Mapping[str, Any]) -> Task:
        module, _, function = self.builder.partition(":")
        build: Callable[[dict[str, Any]], Task] = getattr(importlib.import_module(module), function)
        return build(take(options, self.defaults, self.name))


_IMAGES = {"data_dir": None, "model": "mlp", "hidden": [256, 128], "cnn_channels": [32, 64], "cnn_dense": 1024,
           "val_size": 10000, "train_size": None, "normalize": False}
_SMALL = {"n": 16, "n_val": 4, "n_test": 4}
_SMALL_IMAGES = {"val_size": 20, "hidden": [6, 5], "cnn_channels": [2, 3], "cnn_dense": 8}

TASKS: dict[str, TaskEntry] = {e.name: e for e in [
    TaskEntry("regression", "suite.tasks.synthetic:build_regression",
              {"n": 1000, "n_val": 1000, "n_test": 1000, "dim": 1, "a": 3.0, "b": 2.0, "sigma": 0.1,
               "condition_number": None, "data_seed": 0},
              examples=(_SMALL, {**_SMALL, "dim": 4, "condition_number": 50.0}),
              doc="tutorial 003's y = 3x + 2 + 0.1ε, or a d-dimensional problem of exact condition number κ; MSE."),
    TaskEntry("tiny_mlp", "suite.tasks.synthetic:build_tiny_mlp",
              {"n": 1000, "n_val": 1000, "n_test": 1000, "target": "sine", "noise": 0.1, "hidden": 10,
               "data_seed": 0},
              examples=(_SMALL, {**_SMALL, "target": "cubic", "hidden": 4}),
              doc="tutorial 001's 1-H-1 tanh network on a 1-D target, MSE."),
    TaskEntry("fashion_mnist", "suite.tasks.images:build_fashion_mnist", _IMAGES, dataset="fashion_mnist",
              examples=({**_SMALL_IMAGES, "model": "mlp"}, {**_SMALL_IMAGES, "model": "cnn"}),
              doc="Fashion-MNIST (real IDX files), MLP or 2c2d CNN, cross-entropy."),
    TaskEntry("mnist", "suite.tasks.images:build_mnist", _IMAGES, dataset="mnist",
              examples=({**_SMALL_IMAGES, "model": "mlp"}, {**_SMALL_IMAGES, "model": "cnn", "normalize": True}),
              doc="MNIST (IDX files the user provides), MLP or 2c2d CNN, cross-entropy."),
]}


def check_task_name(name: Any) -> str:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; valid names: {', '.join(TASKS)}. Pick one with task=<name>.")
    return name


def build_task(options: Mapping[str, Any]) -> Task:
    """Build the task named by ``options['name']`` from the rest of ``options``."""
    opts = dict(options)
    return TASKS[check_task_name(opts.pop("name", None))].build(opts)

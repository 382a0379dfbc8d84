"""Task registry: name -> builder(options) -> :class:`suite.types.Task`.

A builder takes the task's config section as a plain dict (``conf/task/<name>.yaml`` with the
command line's overrides) and returns the task on the CPU in float32; the training loop moves
it to the run's device and dtype. Adding a task is one builder and one YAML file.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from suite.tasks.images import build_fashion_mnist, build_mnist
from suite.tasks.synthetic import build_regression, build_tiny_mlp
from suite.types import ConfigError, Task

TASKS: dict[str, Callable[[dict[str, Any]], Task]] = {
    "regression": build_regression,
    "tiny_mlp": build_tiny_mlp,
    "fashion_mnist": build_fashion_mnist,
    "mnist": build_mnist,
}


def check_task_name(name: str) -> str:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; valid names: {', '.join(TASKS)}. Pick one with task=<name>.")
    return name


def build_task(options: Mapping[str, Any]) -> Task:
    """Build the task named by ``options['name']`` from the rest of ``options``."""
    opts = dict(options)
    name = check_task_name(str(opts.pop("name", None)))
    return TASKS[name](opts)


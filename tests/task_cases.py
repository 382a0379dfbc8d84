"""The task registry's small instances, for the tests that every task must pass (a new task's
examples join them with no test edit)."""
from __future__ import annotations

from pathlib import Path

from suite.tasks import TASKS, build_task
from suite.types import Task

CASES = [(name, i) for name, entry in TASKS.items() for i in range(len(entry.examples))]


def small_task(name: str, i: int, fake_mnist_dir: Path) -> Task:
    """Example ``i`` of task ``name`` (a dataset task reads the fake IDX files in ``fake_mnist_dir``)."""
    options = {"name": name, **TASKS[name].examples[i]}
    if TASKS[name].dataset:
        options["data_dir"] = str(fake_mnist_dir)
    return build_task(options)

"""optsuite: benchmarks and hyperparameter studies for first-order optimizers."""
from suite.optimizers import OPTIMIZERS, build_optimizer
from suite.records import RunStore
from suite.tasks import TASKS, build_task
from suite.train import train
from suite.types import RunResult, RunSpec, SuiteError, Task

__all__ = ["OPTIMIZERS", "TASKS", "RunResult", "RunSpec", "RunStore", "SuiteError", "Task",
           "build_optimizer", "build_task", "train"]

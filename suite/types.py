"""The contract of the suite, in one short file: what a Task is, what a run asks for and returns,
and the columns of a stored row.

Read this first. Everything else builds these objects or consumes them: ``suite.tasks`` builds
a :class:`Task`, ``suite.run`` turns a Hydra config into a :class:`RunSpec`, ``suite.train``
turns (Task, RunSpec) into a :class:`RunResult` and its rows (:data:`ROW_SCHEMA`), ``suite.store``
keeps the rows, ``suite.report`` reads them. This module imports no torch, so the store and the
report (which only read rows) start without it.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # annotations only: the tensors live in the tasks and the training loop
    import torch
    from torch import Tensor, nn


class SuiteError(Exception):
    """Bad input or missing resources. The CLI prints the message alone (no traceback) and exits 2.

    Messages say what is wrong, what the valid choices are, and how to fix it.
    """


class ConfigError(SuiteError):
    """A configuration value is invalid (unknown name, out-of-range number, ...)."""


class DataError(SuiteError):
    """Dataset files are missing, truncated or not what they claim to be."""


class StoreError(SuiteError):
    """The results store cannot be written or holds an unreadable file."""


# The version of what the suite stores: raise it with any change that alters stored results (a
# curve, a metric, a tuned lr, the rows' meaning), so a study made before it is not compared with
# one made after (``suite.study.baseline``). Every study records it in its environment.json.
RESULTS_VERSION = 1

# The command line the user typed, set by the console script (``suite.cli``) and inherited by the
# processes it starts (study workers, submitit jobs), so a message deep in a worker says what to
# run again in the user's own words.
COMMAND_VARIABLE = "OPTSUITE_COMMAND"


def command_line() -> str | None:
    """The command line of this process's console script (None outside one, e.g. in tests)."""
    return os.environ.get(COMMAND_VARIABLE) or None


def command() -> str:
    """The console script the user ran (``suite-study``), or "the same command" outside one."""
    line = command_line()
    return line.split()[0] if line else "the same command"


def usable_cores() -> int:
    """The cores this process may run on (its affinity, e.g. a SLURM job's ``cpus_per_task``; not the
    machine's count). Here, torch-free, for the training's threads and the report's processes alike."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Split:
    """Inputs and targets of one data split, already on the run's device."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device, dtype: torch.dtype) -> Split:
        y = self.y.to(device) if not self.y.is_floating_point() else self.y.to(device, dtype)
        return Split(self.x.to(device, dtype), y)


@dataclass
class Task:
    """Data + model + loss + metrics. Built by a registry entry in ``suite.tasks``.

    ``make_model(seed)`` returns a freshly initialized model whose parameters depend only on
    ``seed``. ``loss(output, y)`` is a mean over the batch, so an accumulated mean of equal
    micro-batches equals the big-batch loss. A ``classifier``'s predicted label is
    ``suite.tasks.losses.predicted_labels(output)``: the argmax of several logits, or
    ``logit > 0`` for one. ``optimal_loss`` is the minimum of the training loss where it is known
    in closed form (regression), else ``None``.
    """

    name: str
    model_name: str
    train: Split
    val: Split
    test: Split
    make_model: Callable[[int], nn.Module]
    loss: Callable[[Tensor, Tensor], Tensor]
    classifier: bool
    optimal_loss: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics this task's rows fill: accuracies for classifiers, the excess loss where the
        optimum is known."""
        has = {"excess_loss": self.optimal_loss is not None, "val_accuracy": self.classifier,
               "test_accuracy": self.classifier}
        return tuple(m for m in METRICS if has.get(m, True))

    def to(self, device: torch.device, dtype: torch.dtype) -> Task:
        moved = {s: getattr(self, s).to(device, dtype) for s in ("train", "val", "test")}
        return Task(**{**self.__dict__, **moved})


@dataclass(frozen=True)
class EvalSpec:
    """When to evaluate: ``points`` log- or linearly spaced steps, or a fixed cadence.

    ``every_steps`` or ``every_epochs`` (if set) win over ``points``. Step 0 and the last step
    are always evaluated.
    """

    points: int = 30
    schedule: str = "log"  # log | linear
    every_steps: int | None = None
    every_epochs: float | None = None
    batch: int = 8192  # evaluation chunk size (memory only, not a hyperparameter)
    train_subset: int | None = None  # training loss on the first N training samples (None: all)
    test: bool = True  # False skips the test split (NaN): tuning trials never need it
    noise_scale: bool = False  # measure the gradient noise scale at each evaluation (suite.train.noise)


METRICS = ("train_loss", "val_loss", "test_loss", "val_accuracy", "test_accuracy", "excess_loss")


SHORTFALL_CAP = 1e3  # relative shortfalls beyond this rank alike (and stay finite)


def unreached_value(cap: int, shortfall: float) -> float:
    """Target protocol: the value of a run that missed its target within ``cap`` steps (a diverged
    one: a shortfall above the cap) ranks behind every run that reached it, and among those by its
    shortfall. The tuner scores trials with it; the report replays it from stored rows."""
    return cap + 1 + cap * shortfall


ABOVE_CHANCE = 0.05  # accuracy a run must gain over its untrained model's to count as trained


def collapsed(initial_val_loss: float, final_val_loss: float, initial_val_accuracy: float = math.nan,
              final_val_accuracy: float = math.nan) -> bool:
    """A run that finished without learning: its final validation loss is not below its step-0
    value (a non-finite one included), or, where accuracy is measured, its final validation
    accuracy is below the untrained model's + :data:`ABOVE_CHANCE`. With :attr:`RunResult.diverged`
    it defines a *failed* run (tuner and report alike). Unknown step-0 values decide nothing."""
    if math.isnan(initial_val_loss):
        return False
    if not final_val_loss < initial_val_loss:  # NaN and inf compare False
        return True
    accuracy = not (math.isnan(initial_val_accuracy) or math.isnan(final_val_accuracy))
    return accuracy and final_val_accuracy < initial_val_accuracy + ABOVE_CHANCE


@dataclass(frozen=True)
class Target:
    """``metric`` reaches ``value`` (absolute) or ``relative`` × its value at step 0 (``<=`` for
    losses, ``>=`` for accuracies). Declared in a study preset before it runs, never after."""

    metric: str
    value: float | None = None
    relative: float | None = None

    def __post_init__(self):
        where = f"target {{metric: {self.metric}, value: {self.value}, relative: {self.relative}}}"
        if self.metric not in METRICS:
            raise ConfigError(f"{where}: unknown metric; valid: {', '.join(METRICS)}.")
        if (self.value is None) == (self.relative is None):
            raise ConfigError(f"{where}: give exactly one of value (absolute) or relative (fraction of step 0).")
        if self.relative is not None and (self.maximize or not 0 < self.relative < 1):
            raise ConfigError(f"{where}: relative targets are for losses and lie in (0, 1) (a fraction of the "
                              f"step-0 loss; 1 or more is met at step 0); give accuracies an absolute value.")
        if self.value is not None and self.maximize and not 0 < self.value <= 1:
            raise ConfigError(f"{where}: an accuracy can only reach values in (0, 1]; e.g. value: 0.85.")
        if self.value is not None and not self.maximize and self.value < 0:
            raise ConfigError(f"{where}: a loss is never below 0; give a value >= 0 (or relative: <fraction>).")

    def check_task(self, task: Task) -> Target:
        """This target for ``task``: its metric must be one the task has, and a loss value at least
        the task's known floor (the training loss's optimum, where it is known)."""
        where = f"target {{metric: {self.metric}, value: {self.value}, relative: {self.relative}}}"
        if self.metric not in task.metrics:
            why = "it is not a classifier" if self.metric.endswith("accuracy") else "its optimum is not known"
            raise ConfigError(f"{where}: task {task.name} has no {self.metric} ({why}); its metrics: "
                              f"{', '.join(m for m in task.metrics if not m.startswith('test'))}.")
        if self.metric == "train_loss" and self.value is not None and task.optimal_loss is not None \
                and self.value < task.optimal_loss:
            raise ConfigError(f"{where}: task {task.name}'s training loss is never below its optimum "
                              f"{task.optimal_loss:.6g}; give a value above it (or metric: excess_loss).")
        return self

    @property
    def maximize(self) -> bool:
        return self.metric.endswith("accuracy")

    def thresholds(self, initial):
        """The threshold for a run whose step-0 value is ``initial`` (a float or a pandas Series)."""
        return initial * self.relative if self.relative is not None else initial * 0 + self.value

    def met(self, value, threshold) -> bool:
        return value >= threshold if self.maximize else value <= threshold

    def shortfall(self, initial: float, final: float) -> float:
        """How far ``final`` falls short of the threshold, relative to it (0 if met), at most
        :data:`SHORTFALL_CAP` (a non-finite value counts as the cap)."""
        threshold = self.thresholds(initial)
        if not math.isfinite(final) or not math.isfinite(threshold) or threshold == 0:
            return SHORTFALL_CAP
        gap = (threshold - final) if self.maximize else (final - threshold)
        return min(max(gap / abs(threshold), 0.0), SHORTFALL_CAP)

    def describe(self) -> str:
        op = "≥" if self.maximize else "≤"
        return (f"{self.metric} {op} {self.relative:g} × its step-0 value" if self.relative is not None
                else f"{self.metric} {op} {self.value:g}")


@dataclass(frozen=True)
class LRSchedule:
    """The learning-rate factor over a run (``torch.optim.lr_scheduler.LambdaLR``): a linear warm-up
    from 0 over ``warmup`` steps (a fraction of the run if < 1), then ``constant``, ``cosine`` or
    ``linear`` decay to ``final`` × lr at the last step, or ``step``: × ``step_gamma`` every
    ``step_every`` steps (a fraction of the run if < 1). Each configuration keeps its own base lr."""

    name: str = "constant"  # constant | cosine | linear | step
    warmup: float = 0.0
    final: float = 0.0
    step_every: float = 0.5
    step_gamma: float = 0.1

    def describe(self) -> str:
        """Short label for the rows: ``constant``, ``cosine(final=0,warmup=0.05)``, ``step(0.5,x0.1)``."""
        if self.name == "step":
            text = f"step(every={self.step_every:g},gamma={self.step_gamma:g}"
        elif self.name == "constant":
            text = "constant("
        else:
            text = f"{self.name}(final={self.final:g}"
        text += f"{',' if not text.endswith('(') else ''}warmup={self.warmup:g})" if self.warmup else ")"
        return text.replace("()", "")


@dataclass(frozen=True)
class RunSpec:
    """One run, fully resolved and validated (``batch_size`` is an int, lr a positive float)."""

    task: str
    optimizer: str
    hparams: dict[str, Any]  # optimizer hyperparameters other than lr, e.g. momentum, betas
    lr: float
    batch_size: int
    seed: int = 0
    accumulation_steps: int = 1
    accumulation_reduction: str = "mean"  # mean | sum (tutorial 004's un-averaged variant)
    sampling: str = "shuffle"  # shuffle | sequential | replacement
    epochs: float = 1.0
    max_steps: int | None = None
    max_seconds: float | None = None
    eval: EvalSpec = EvalSpec()
    warmup_steps: int = 3
    divergence_factor: float = 1e3
    impl: str = "auto"  # auto | forloop | foreach | fused
    device: str = "cpu"
    dtype: str = "float32"
    lr_schedule: LRSchedule = LRSchedule()
    target: Target | None = None  # exact steps-to-target is measured when set
    stop_at_target: bool = False  # end the run once the target's first step is located (tuning trials)

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.accumulation_steps


# RunSpec fields that tell the configurations of one cell apart (with its searched hyperparameters).


@dataclass
class RunResult:
    """What one run produced: one dict per evaluation point, plus run-level facts."""

    rows: list[dict[str, Any]]
    diverged: bool
    steps: int
    train_seconds: float
    impl: str
    pruned: bool = False  # stopped early by a tuner's pruner (``on_eval`` returned True)
    stack_size: int = 1  # configurations trained together (stacked training); time_s is this run's share
    steps_to_target: float = math.nan  # the first step meeting spec.target, located by replay; NaN: not reached
    to_target_bracket: float = math.nan  # width in steps of the interval it was located in (0 or 1: exact)
    trace: dict[str, list] = field(default_factory=dict)  # every step's mini-batch loss, log-binned (train.trace)


# --- the stored row -------------------------------------------------------------------------------
# One row per evaluation point of a run; one parquet file per run (its mini-batch loss trace
# beside it under traces/, TRACE_SCHEMA). Declared once here: the
# training layer builds rows with these columns and dtypes (pandas names), the store checks them
# on read, the report's metrics use them. ``config`` (the run's identity as JSON) closes every row.

# Optimizer hyperparameters with a column of their own (NaN where an optimizer has no such
# hyperparameter); every hyperparameter, these and others, is also in ``config``.
HPARAM_COLUMNS = ("momentum", "beta1", "beta2", "alpha", "eps", "weight_decay")

# The machine and versions every row carries (the report's environment table lists them).
ENVIRONMENT_COLUMNS = ("device", "device_name", "threads", "hostname", "torch_version", "python_version",
                       "suite_version", "git_commit")

ROW_SCHEMA: dict[str, str] = {
    "run_id": "str", "task": "str", "model": "str", "optimizer": "str", "optimizer_impl": "str",
    "regime": "str", "batch_size": "int64", "micro_batch": "int64", "accumulation_steps": "int64",
    "accumulation_reduction": "str", "sampling": "str", "lr": "float64",
    **{c: "float64" for c in HPARAM_COLUMNS},
    "seed": "int64", "n_train": "int64",
    # the evaluation point
    "step": "int64", "epoch": "float64", "samples": "int64", "time_s": "float64", "train_loss": "float64",
    "minibatch_loss": "float64", "val_loss": "float64", "test_loss": "float64", "val_accuracy": "float64",
    "test_accuracy": "float64", "excess_loss": "float64",
    # gradient noise scale at the evaluation point (NaN where not measured, suite.train.noise):
    # B_simple = tr(Σ)/|G|² by the two-batch-size estimate (every task) and exactly (per-example
    # gradients, small models), and B_noise = tr(HΣ)/(GᵀHG) exactly (models small enough for H)
    "b_simple_est": "float64", "b_simple_exact": "float64", "b_noise_exact": "float64",
    # the run's outcome and how it ran
    "optimal_loss": "float64", "diverged": "bool", "diverged_step": "float64", "pruned": "bool",
    "steps_to_target": "float64", "to_target_bracket": "float64", "lr_schedule": "str",
    "stack_size": "int64", "warmup_steps": "int64", "dtype": "str",
    **{c: "int64" if c == "threads" else "str" for c in ENVIRONMENT_COLUMNS},
    "created_at": "str",
    # tuning tags: null where a run is no trial, typed so a mixed store reads as one table
    # (other tags, e.g. ``purpose`` for a study's extra runs, become extra columns before config)
    "study": "str", "trial": "float64",
    "config": "str",
}
COLUMNS = tuple(c for c in ROW_SCHEMA if c not in ("study", "trial", "config"))  # before the tags
NOISE_COLUMNS = ("b_simple_est", "b_simple_exact", "b_noise_exact")
# What was added after stores were first written, declared once with the value that means "as before
# it": RunSpec fields (dotted: inside eval) at that value are left out of the identities
# (suite.store.identity), so run ids and cell names of a store written before them hold; row columns
# missing from an older file read as that value (suite.store.runs), so old results stay readable.
LATER_FIELDS: dict[str, Any] = {"lr_schedule": asdict(LRSchedule()), "target": None, "stop_at_target": False,
                                "eval.noise_scale": False}
LATER_COLUMNS: dict[str, Any] = {"steps_to_target": math.nan, "to_target_bracket": math.nan,
                                 "lr_schedule": LRSchedule().describe(), **{c: math.nan for c in NOISE_COLUMNS}}
TRACE_SCHEMA: dict[str, str] = {"run_id": "str", "step_lo": "int64", "step_hi": "int64", "count": "int64",
                                "mean": "float64", "min": "float64", "max": "float64"}

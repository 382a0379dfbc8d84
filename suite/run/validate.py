"""Checks of a composed run config that need no task: known keys, and each value's type and range.

Hydra's ``+key=value`` adds any key and its parser turns ``abc`` into a string and ``2.5`` into a
float wherever they are typed, so every value is checked here before it is used; a wrong one is a
:class:`ConfigError` that names the key, what it must be, and an example. ``prepare`` calls these
before it builds the task.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

from suite.train.threads import check_threads
from suite.types import ConfigError, EvalSpec, LRSchedule, Target

# The top-level keys of conf/config.yaml (a test checks they match): anything else is a typo.
RUN_KEYS = ("task", "optimizer", "tune", "batch_size", "accumulation_steps", "accumulation_reduction", "sampling",
            "lr", "seed", "budget", "eval", "lr_schedule", "target", "stop_at_target", "warmup_steps",
            "divergence_factor", "device", "dtype", "threads", "results_dir", "force", "progress")
BUDGET_KEYS = ("epochs", "max_steps", "max_seconds")
FLAGS = ("force", "progress", "stop_at_target")
SCHEDULES = ("constant", "cosine", "linear", "step")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_keys(given: Iterable[str], valid: Iterable[str], where: str) -> None:
    """Refuse keys a section does not have (``+optimiser=adam`` would otherwise be ignored)."""
    valid = list(valid)
    unknown = sorted(str(k) for k in set(given) - set(valid))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {', '.join(prefix + k for k in unknown)}; valid {where or 'top-level'} keys: "
            f"{', '.join(valid)}. Check the spelling (e.g. optimizer=adam, not +optimiser=adam)."
        )


def check_name(section: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{section}.name={value!r} must be a name, e.g. {section}=<name> on the command line.")
    return value


def choice(name: str, value: Any, valid: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ConfigError(f"{name}={value!r} is invalid; valid: {', '.join(valid)}.")
    return value


def results_dir(value: Any) -> str:
    """A non-empty path: ``results_dir=`` (empty) would write ``./runs`` wherever the command runs."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"results_dir={value!r} is invalid; give the directory that holds the results, "
                          f"e.g. results_dir=results/local.")
    return value


# torch takes 64-bit seeds, but the batch order and the noise scale seed their generators with
# 1_000_003 * seed + ..., which must stay within 64 bits; 2^32 - 1 keeps every seed well inside.
SEED_MAX = 2**32 - 1


def seed(name: str, value: Any) -> int:
    if not is_int(value) or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{name}={value!r} is invalid; a seed is an integer from 0 to {SEED_MAX} (2^32 - 1), "
                          f"e.g. {name}=0.")
    return value


def seeds(name: str, value: Any) -> list[int]:
    """A non-empty list of distinct seeds (a repeated seed would be the same run twice)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name}={value!r} is invalid; give a list of seeds, e.g. {name}=[0,1,2].")
    for s in value:
        seed(f"{name} entry", s)
    repeated = sorted({s for s in value if list(value).count(s) > 1})
    if repeated:
        raise ConfigError(f"{name}={list(value)} repeats seed(s) {', '.join(map(str, repeated))}: a seed is one run, "
                          f"so a repeat adds nothing; give distinct seeds, e.g. {name}={sorted(set(value))}.")
    return list(value)


def threads(value: Any) -> int | str | None:
    return check_threads(value)


def flags(c: Mapping[str, Any]) -> None:
    for key in FLAGS:
        if key in c and not isinstance(c[key], bool):
            raise ConfigError(f"{key}={c[key]!r} must be true or false.")


def _optional_int(name: str, value: Any, low: int) -> None:
    if value is not None and (not is_int(value) or value < low):
        field = name.rpartition(".")[2]
        raise ConfigError(f"{name}={value!r} must be null or an integer >= {low} ({field} >= {low}, a whole number).")


def eval_spec(ev: Mapping[str, Any]) -> EvalSpec:
    """``eval.*`` as an :class:`EvalSpec`; every field's type and range checked."""
    check_keys(ev, [f.name for f in dataclasses.fields(EvalSpec)], "eval")
    spec = EvalSpec(**ev)
    if not is_int(spec.points) or spec.points < 2:
        raise ConfigError(f"eval.points={spec.points!r} is invalid: eval: points must be >= 2 (an integer, "
                          f"e.g. eval.points=30).")
    choice("eval.schedule", spec.schedule, ("log", "linear"))
    _optional_int("eval.every_steps", spec.every_steps, 1)
    if spec.every_epochs is not None and not (is_number(spec.every_epochs) and spec.every_epochs > 0):
        raise ConfigError(f"eval.every_epochs={spec.every_epochs!r} must be null or a number > 0.")
    if not is_int(spec.batch) or spec.batch < 1:
        raise ConfigError(f"eval.batch={spec.batch!r} must be an integer >= 1 (the evaluation chunk size).")
    _optional_int("eval.train_subset", spec.train_subset, 1)
    for key in ("test", "noise_scale"):
        if not isinstance(getattr(spec, key), bool):
            raise ConfigError(f"eval.{key}={getattr(spec, key)!r} must be true or false.")
    return spec


def lr_schedule(given: Mapping[str, Any] | None) -> LRSchedule:
    """``lr_schedule.*`` as an :class:`LRSchedule`, every field checked."""
    given = dict(given or {})
    check_keys(given, [f.name for f in dataclasses.fields(LRSchedule)], "lr_schedule")
    schedule = LRSchedule(**given)
    choice("lr_schedule.name", schedule.name, SCHEDULES)
    numbers = {k: getattr(schedule, k) for k in ("warmup", "final", "step_every", "step_gamma")}
    if not all(is_number(v) and v >= 0 for v in numbers.values()) or schedule.step_every <= 0 or \
            not 0 < schedule.step_gamma <= 1 or schedule.final > 1:
        raise ConfigError(f"lr_schedule={numbers} is invalid: warmup >= 0 (steps, or a fraction of the run < 1), "
                          f"0 <= final <= 1, step_every > 0, 0 < step_gamma <= 1.")
    return LRSchedule(schedule.name, *(float(v) for v in numbers.values()))


def target(given: Mapping[str, Any] | None) -> Target | None:
    """``target`` as a :class:`Target` (or None): a validation or training metric, never test."""
    if given is None:
        return None
    if not isinstance(given, Mapping):
        raise ConfigError(f"target={given!r} must be null or {{metric: <name>, value: <v>}} "
                          f"(or {{metric: <name>, relative: <fraction>}}).")
    check_keys(given, ("metric", "value", "relative"), "target")
    spec = Target(**given)
    for key in ("value", "relative"):
        if getattr(spec, key) is not None and not is_number(getattr(spec, key)):
            raise ConfigError(f"target.{key}={getattr(spec, key)!r} must be a finite number.")
    if spec.metric.startswith("test"):
        raise ConfigError(f"target.metric={spec.metric}: targets are measured on training or validation data "
                          f"(runs and tuning never look at test); pick one of train_loss, excess_loss, val_loss, "
                          f"val_accuracy.")
    return spec


def budget(b: Mapping[str, Any]) -> tuple[float, int | None, float | None]:
    check_keys(b, BUDGET_KEYS, "budget")
    epochs, max_steps, max_seconds = b.get("epochs"), b.get("max_steps"), b.get("max_seconds")
    if not is_number(epochs) or epochs < 0:
        raise ConfigError(f"budget.epochs={epochs!r} is invalid; it must be a finite number >= 0 (e.g. budget.epochs=2).")
    _optional_int("budget.max_steps", max_steps, 0)
    if max_seconds is not None and not (is_number(max_seconds) and max_seconds > 0):
        raise ConfigError(f"budget.max_seconds={max_seconds!r} must be null or a number > 0.")
    return float(epochs), max_steps, max_seconds


def _kind(default: Any) -> tuple[str, Any] | None:
    """What a task option must be, judged by its default (None: anything its builder accepts)."""
    if isinstance(default, bool):
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(default, int):
        return "an integer", is_int
    if isinstance(default, float):
        return "a finite number", is_number
    if isinstance(default, str):
        return "a string", lambda v: isinstance(v, str)
    if isinstance(default, (list, tuple)):
        return "a list", lambda v: isinstance(v, (list, tuple))
    return None


def task_option_types(task: str, options: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Each task option has its default's type (``task.sigma=abc`` is refused here, with the fix)."""
    for key, value in options.items():
        kind = _kind(defaults.get(key))
        if kind is not None and not kind[1](value):
            raise ConfigError(f"task {task!r}: {key}={value!r} must be {kind[0]} (its default is "
                              f"{defaults[key]!r}); set it with task.{key}=<value>.")

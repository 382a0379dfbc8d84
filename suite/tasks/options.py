"""Option handling shared by the task builders: defaults, unknown keys, positive counts."""
from __future__ import annotations

from typing import Any, Mapping

from suite.types import ConfigError


def take(options: Mapping[str, Any], defaults: Mapping[str, Any], task: str) -> dict[str, Any]:
    """Defaults overridden by ``options``; an unknown key is an error naming the valid ones."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(
            f"task {task!r} has no option {', '.join(unknown)}; valid options: {', '.join(defaults)}. "
            f"Set them as task.<option>=<value>."
        )
    return {**defaults, **options}


def positive_int(opts: Mapping[str, Any], key: str, task: str, allow_zero: bool = False) -> int:
    value = opts[key]
    lo = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"task {task!r}: {key}={value!r} must be an integer >= {lo} (task.{key}=<int>).")
    return value

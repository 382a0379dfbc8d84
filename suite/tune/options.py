"""The keys of ``cfg.tune`` and the types of its sampler and pruner options, checked before a study
opens (``tune.tpe.multivariate=abc`` or ``+tune.n_trails=3`` is an error naming the fix, not a
silently different study)."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from suite.types import ConfigError

TUNE_KEYS = ("n_trials", "batch", "sampler", "seed", "seeds", "pruner", "prune_after", "lr_range", "widen", "refine",
             "resolve", "retune", "search", "ranges", "storage", "stale_after_s", "tpe", "qmc", "median", "hyperband")


def _int_at_least(low: int):
    return f"an integer >= {low}", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


_BOOL = ("true or false", lambda v: isinstance(v, bool))
# Sampler and pruner options (conf/tune/default.yaml): option -> (what it must be, check).
OPTION_CHECKS: dict[str, dict[str, tuple[str, Callable[[Any], bool]]]] = {
    "tpe": {"n_startup_trials": _int_at_least(0), "n_ei_candidates": _int_at_least(1), "multivariate": _BOOL,
            "group": _BOOL, "constant_liar": _BOOL},
    "qmc": {"qmc_type": ("sobol or halton", lambda v: v in ("sobol", "halton")), "scramble": _BOOL},
    "median": {"n_startup_trials": _int_at_least(0), "interval_steps": _int_at_least(1),
               "n_min_trials": _int_at_least(1)},
    "hyperband": {"reduction_factor": _int_at_least(2)},
}


def check_options(t: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every sampler and pruner option has its type (``tune.tpe.multivariate=abc`` is refused)."""
    unknown = sorted(str(k) for k in set(t) - set(TUNE_KEYS))
    if unknown:
        raise ConfigError(f"unknown config key {', '.join(f'tune.{k}' for k in unknown)}; valid tune keys: "
                          f"{', '.join(TUNE_KEYS)}.")
    options = {}
    for section, checks in OPTION_CHECKS.items():
        given = t.get(section)
        if given is None:
            continue
        if not isinstance(given, Mapping):
            raise ConfigError(f"tune.{section}={given!r} must be a mapping of options: {', '.join(checks)}.")
        for key, value in given.items():
            if key not in checks:
                raise ConfigError(f"unknown config key tune.{section}.{key}; valid: {', '.join(checks)}.")
            what, ok = checks[key]
            if not ok(value):
                raise ConfigError(f"tune.{section}.{key}={value!r} is invalid; it must be {what}.")
        options[section] = dict(given)
    return options


def search_list(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"tune.search={value!r} must be a list of hyperparameter names, e.g. tune.search=[momentum].")
    return list(value)

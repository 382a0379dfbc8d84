"""Study presets -> cells: every axis validated against the registries, then the run config of
each cell (the study's top-level settings + the cell's axes, budget, evaluation, protocol).

A preset names its measurement protocol (``study.protocol``): ``target`` puts the task's target
(``study.targets.<task>``, declared before the run) into every run, so trials are ranked by their
steps to it and final runs measure them exactly; ``budget`` gives every batch size of a task the
same epochs (no step cap) and ranks trials by their final validation loss. Tuning trials use
``study.tune_seeds`` (disjoint from the final ``seeds``, so no final run is a trial and the winning
trial's seed is not among the reported ones). ``study.axes.<task>`` overrides ``batch_sizes``,
``accumulation``, ``seeds``, ``tune_seeds``, ``n_trials`` or ``parts`` for one task. An
accumulation cell ``MxK`` reuses the tuned lr of the batch ``M·K`` it emulates (the update is the
same); ``MxK:sum`` is tutorial 004's un-averaged variant, tuned on its own. A study in protocol
parts, its budgets per part and its re-tunings: :mod:`suite.study.parts`."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

from suite.optim.registry import OPTIMIZERS, get_spec
from suite.run import validate as V
from suite.run.prepare import register_optimizer
from suite.study.launchers import LAUNCHERS
from suite.study.parts import (PROTOCOLS, check_budgets, check_parts, check_retunes, part_budget, parts_of,
                               retune_seeds)
from suite.tasks import TASKS, build_task
from suite.types import ConfigError
from suite.cell import Cell

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


__all__ = ["PROTOCOLS", "expand", "validate", "cell_config", "cell_container", "axis", "task_options", "final_seeds"]
AXES = ("batch_sizes", "accumulation", "seeds", "tune_seeds", "n_trials", "parts")
ALL = "all"  # study.optimizers: every registry entry


def _names(kind: str, given: list[str], registry: dict) -> list[str]:
    unknown = [g for g in given if g not in registry]
    if unknown or not given:
        raise ConfigError(
            f"study.{kind}: {', '.join(map(str, unknown)) or 'empty list'} "
            f"{'is not a valid name' if unknown else 'needs at least one entry'}; "
            f"valid: {', '.join(registry)}. Example: study.{kind}=[{next(iter(registry))}]"
        )
    return list(given)


def _batch_sizes(given: list[Any]) -> list[int | str]:
    bad = [b for b in given if b != "full" and (isinstance(b, bool) or not isinstance(b, int) or b < 1)]
    if bad or not given:
        raise ConfigError(f"study.batch_sizes: {bad or 'empty list'} invalid; use integers >= 1 or 'full', "
                          f"e.g. study.batch_sizes=[1,32,full].")
    return list(given)


def _accumulation(given: list[Any]) -> list[tuple[int, int, str]]:
    out = []
    for entry in given:
        shape, _, reduction = str(entry).lower().partition(":")
        try:
            micro, k = (int(p) for p in shape.split("x"))
            assert micro >= 1 and k >= 2 and reduction in ("", "mean", "sum")
        except (ValueError, AssertionError):
            raise ConfigError(f"study.accumulation entry {entry!r} is invalid; write MxK with micro-batch M >= 1 "
                              f"and K >= 2 accumulation steps, e.g. study.accumulation=[64x16] (MxK:sum for the "
                              f"un-averaged variant).") from None
        out.append((micro, k, reduction or "mean"))
    return out


def _plain(node: Any) -> dict[str, Any]:
    """A section of the study as a plain dict ({} where absent)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


def axis(study: DictConfig, task: str, key: str) -> Any:
    """``study.axes.<task>.<key>`` where the preset sets one for this task, else ``study.<key>``."""
    own = _task_section(study, "axes", task)
    return own[key] if key in own else OmegaConf.to_container(study, resolve=True)[key]


def _task_section(study: DictConfig, key: str, task: str) -> dict[str, Any]:
    """``study.<key>.<task>`` as a dict ({} where absent)."""
    section = study.get(key) or {}
    return OmegaConf.to_container(section[task], resolve=True) if task in section else {}


def final_seeds(study: DictConfig, task: str) -> tuple[int, ...]:
    """The seeds of a task's final runs."""
    return tuple(axis(study, task, "seeds"))


def task_options(study: DictConfig, task: str) -> dict[str, Any]:
    return _task_section(study, "task_options", task)


def optimizer_names(study: DictConfig) -> list[str]:
    """``study.optimizers``: a list of names, or ``all`` for every built-in registry entry (so adding
    an optimizer to the registry adds it to the presets that say ``all``)."""
    if study.optimizers == ALL:
        return [name for name, entry in OPTIMIZERS.items() if not entry.external]
    return list(study.optimizers)


def expand(study: DictConfig, sizes: dict[str, int]) -> list[Cell]:
    """All cells of the study; batch sizes above a task's n are left out (``full`` covers them)."""
    cells = []
    for task in study.tasks:
        n = sizes[task]
        batches = [b for b in _batch_sizes(list(axis(study, task, "batch_sizes"))) if b == "full" or b <= n]
        accum = [(m * k, k, red) for m, k, red in _accumulation(list(axis(study, task, "accumulation"))) if m * k <= n]
        for opt in optimizer_names(study):
            if get_spec(opt).full_batch_only:  # e.g. L-BFGS: the full-batch cell only
                cells += [Cell(task, opt, "full", n_train=n)] if "full" in batches else []
                continue
            cells += [Cell(task, opt, b, n_train=n) for b in batches]
            cells += [Cell(task, opt, b, k, accumulation_reduction=red, n_train=n) for b, k, red in accum]
    return cells


def validate(study: DictConfig) -> dict[str, int]:
    """Check every axis against the registries; return each task's training-set size."""
    _names("tasks", list(study.tasks), TASKS)
    names = optimizer_names(study)
    for name in names:  # a user's optimizer YAML (it names cls) joins the registry first
        if name not in OPTIMIZERS:
            _register_external(name)
    _names("optimizers", names, OPTIMIZERS)
    only_full = [o for o in names if get_spec(o).full_batch_only]
    if only_full and "full" not in study.batch_sizes:
        raise ConfigError(f"study.optimizers has {', '.join(only_full)}, which run at batch_size=full only, but "
                          f"study.batch_sizes={list(study.batch_sizes)} has no full; add full or drop them.")
    _batch_sizes(list(study.batch_sizes))
    _accumulation(list(study.accumulation))
    V.seeds("study.seeds", list(study.seeds))
    _check_axes(study)
    for key in ("workers", "n_trials", "tune_batch"):
        if not isinstance(study[key], int) or study[key] < 1:
            raise ConfigError(f"study.{key}={study[key]!r} must be an integer >= 1.")
    for key, what in (("refine", "trials around the best lr"), ("resolve", "bisection trials until resolved")):
        value = study.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"study.{key}={value!r} must be an integer >= 0 ({what}; 0: none).")
    if study.launcher not in LAUNCHERS:
        raise ConfigError(f"study.launcher={study.launcher!r} is invalid; valid: {', '.join(LAUNCHERS)}.")
    missing = [t for t in study.tasks if t not in study.budgets]
    if missing:
        raise ConfigError(f"study.budgets has no entry for {', '.join(missing)}; add "
                          f"study.budgets.<task>={{epochs: E, max_steps: S}}.")
    _check_protocol(study)
    return {t: build_task({"name": t, **task_options(study, t)}).n_train for t in study.tasks}


def _check_axes(study: DictConfig) -> None:
    """Per-task axes: known tasks and keys, valid values; tuning seeds disjoint from final seeds."""
    axes = _plain(study.get("axes"))
    for task, own in axes.items():
        if task not in TASKS or not isinstance(own, dict) or set(own) - set(AXES):
            raise ConfigError(f"study.axes.{task}={own!r} is invalid: keys of study.axes are task names "
                              f"({', '.join(TASKS)}), each with some of {', '.join(AXES)}.")
    for task in study.tasks:
        _batch_sizes(list(axis(study, task, "batch_sizes")))
        _accumulation(list(axis(study, task, "accumulation")))
        seeds = V.seeds(f"study.axes.{task}.seeds", list(axis(study, task, "seeds")))
        tune_seeds = _tune_seeds(study, task)
        if study.tune and tune_seeds is not None and set(seeds) & set(tune_seeds):
            raise ConfigError(f"study.tune_seeds={tune_seeds} and the final seeds of {task} {seeds} overlap: a final "
                              f"run would repeat a tuning trial (the winner's curse). Keep them disjoint, e.g. "
                              f"study.tune_seeds=[1000].")


def _tune_seeds(study: DictConfig, task: str) -> list[int] | None:
    """The tuning trials' seeds of ``task`` (None: trials train at the first final seed)."""
    seeds = _task_section(study, "axes", task).get("tune_seeds", study.get("tune_seeds"))
    seeds = OmegaConf.to_container(seeds) if OmegaConf.is_config(seeds) else seeds
    return None if seeds is None else V.seeds(f"study.tune_seeds of {task}", list(seeds))


def _check_protocol(study: DictConfig) -> None:
    """The protocol parts (:mod:`suite.study.parts`), a target per task where a part needs one, each
    part's budget, and the re-tunings."""
    parts = check_parts(study)
    targets = _plain(study.get("targets"))
    if "target" in parts:
        missing = [t for t in study.tasks if t not in targets]
        if missing:
            raise ConfigError(f"study.protocol=target needs a target per task; study.targets has none for "
                              f"{', '.join(missing)} (e.g. study.targets.{missing[0]}={{metric: val_loss, value: 0.1}}).")
        for task in study.tasks:
            V.target(targets[task])
    check_budgets(study)
    check_retunes(study, {t: list(axis(study, t, "seeds")) for t in study.tasks},
                  {t: _tune_seeds(study, t) for t in study.tasks})


def _compose_group(group: str, name: str) -> DictConfig:
    """The ``group`` (task or optimizer) called ``name`` as Hydra composes it from conf/ (the same
    files as suite-train; a user's ``--config-dir`` included)."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=[f"{group}={name}"])[group]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[f"{group}={name}"])[group]


def _register_external(name: str) -> None:
    """Register ``optimizer=<name>`` if Hydra finds a user's YAML for it (one that names ``cls``);
    any other unknown name is left for the axis check, which lists the valid ones."""
    try:
        options = OmegaConf.to_container(_compose_group("optimizer", name), resolve=True)
    except MissingConfigException:
        return
    if "cls" in options:
        register_optimizer(options)


def cell_config(cfg: DictConfig, cell: Cell, part: str | None = None, retune: int = 0,
                composed: dict | None = None) -> DictConfig:
    """:func:`cell_container` as a config."""
    return OmegaConf.create(cell_container(cfg, cell, part, retune, composed))


def cell_container(cfg: DictConfig, cell: Cell, part: str | None = None, retune: int = 0,
                   composed: dict | None = None) -> dict[str, Any]:
    """The run config of one cell in one protocol ``part`` (None: the study's only one): the study's
    top-level settings + the cell's axes and budget; ``retune`` > 0 gives re-tuning ``retune``'s
    tuning settings (its sampler seed and tuning seeds, :mod:`suite.study.parts`). ``composed``: a
    dict the caller keeps across the cells of one listing, so Hydra composes each task and optimizer group
    once (a compose costs tens of ms, a study lists hundreds of configs)."""
    study = cfg.study
    part = part if part is not None else parts_of(study, cell.task)[0]
    composed = {} if composed is None else composed
    for group, name in (("task", cell.task), ("optimizer", cell.optimizer)):
        if (group, name) not in composed:
            composed[group, name] = OmegaConf.to_container(_compose_group(group, name))
    base = OmegaConf.to_container(cfg, resolve=True)
    base.pop("study")
    base.pop("report", None)  # report options never reach a run
    targets, tune_seeds = _plain(study.get("targets")), retune_seeds(_tune_seeds(study, cell.task), retune)
    base.update(
        task={**copy.deepcopy(composed["task", cell.task]), **task_options(study, cell.task)},
        optimizer=copy.deepcopy(composed["optimizer", cell.optimizer]), batch_size=cell.batch_size,
        accumulation_steps=cell.accumulation_steps, accumulation_reduction=cell.accumulation_reduction,
        budget={**base["budget"], **part_budget(study, cell.task, part)},
        eval={**base["eval"], "points": study.eval_points, **_task_section(study, "eval", cell.task)},
        threads=(study.get("threads") or {}).get(cell.task, base["threads"]),
        target=targets.get(cell.task) if part == "target" else None,
        stop_at_target=part == "target",  # the target part's runs end at their target (the budget part's measure the end)
        lr_schedule={**base["lr_schedule"], **_plain(study.get("lr_schedule"))},
        seed=int((tune_seeds or final_seeds(study, cell.task) or [0])[0]),  # the trials' (first) seed
    )
    base["tune"] = {**base.get("tune", {}), "n_trials": axis(study, cell.task, "n_trials"), "batch": study.tune_batch,
                    "widen": bool(study.get("widen", False)), "seeds": tune_seeds, "refine": int(study.get("refine", 0)),
                    "resolve": int(study.get("resolve", 0)),
                    **({"retune": retune, "seed": int(base.get("tune", {}).get("seed", 0)) + retune} if retune else {})}
    return base

"""Study presets -> cells: every axis validated against the registries, then the run config of
each cell (the study's top-level settings + the cell's axes, budget and evaluation)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

from suite.optim.registry import OPTIMIZERS, get_spec
from suite.run.prepare import register_optimizer
from suite.study.launchers import LAUNCHERS
from suite.tasks import TASKS, build_task
from suite.types import ConfigError

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@dataclass(frozen=True)
class Cell:
    task: str
    optimizer: str
    batch_size: int | str  # an int, or "full"
    accumulation_steps: int = 1

    @property
    def label(self) -> str:
        acc = self.accumulation_steps
        batch = self.batch_size if acc == 1 else f"{self.batch_size // acc}x{acc}"
        return f"{self.task}/{self.optimizer}/b{batch}"


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


def _accumulation(given: list[Any]) -> list[tuple[int, int]]:
    out = []
    for entry in given:
        try:
            micro, k = (int(p) for p in str(entry).lower().split("x"))
            assert micro >= 1 and k >= 2
        except (ValueError, AssertionError):
            raise ConfigError(f"study.accumulation entry {entry!r} is invalid; write MxK with micro-batch M >= 1 "
                              f"and K >= 2 accumulation steps, e.g. study.accumulation=[64x16].") from None
        out.append((micro, k))
    return out


def _task_section(study: DictConfig, key: str, task: str) -> dict[str, Any]:
    """``study.<key>.<task>`` as a dict ({} where absent)."""
    section = study.get(key) or {}
    return OmegaConf.to_container(section[task], resolve=True) if task in section else {}


def task_options(study: DictConfig, task: str) -> dict[str, Any]:
    return _task_section(study, "task_options", task)


def expand(study: DictConfig, sizes: dict[str, int]) -> list[Cell]:
    """All cells of the study; batch sizes above a task's n are left out (``full`` covers them)."""
    cells = []
    for task in study.tasks:
        n = sizes[task]
        batches = [b for b in _batch_sizes(list(study.batch_sizes)) if b == "full" or b <= n]
        accum = [(m * k, k) for m, k in _accumulation(list(study.accumulation)) if m * k <= n]
        for opt in study.optimizers:
            if get_spec(opt).full_batch_only:  # e.g. L-BFGS: the full-batch cell only
                cells += [Cell(task, opt, "full")] if "full" in batches else []
                continue
            cells += [Cell(task, opt, b) for b in batches] + [Cell(task, opt, b, k) for b, k in accum]
    return cells


def validate(study: DictConfig) -> dict[str, int]:
    """Check every axis against the registries; return each task's training-set size."""
    _names("tasks", list(study.tasks), TASKS)
    for name in study.optimizers:  # a user's optimizer YAML (it names cls) joins the registry first
        if name not in OPTIMIZERS:
            _register_external(name)
    _names("optimizers", list(study.optimizers), OPTIMIZERS)
    only_full = [o for o in study.optimizers if get_spec(o).full_batch_only]
    if only_full and "full" not in study.batch_sizes:
        raise ConfigError(f"study.optimizers has {', '.join(only_full)}, which run at batch_size=full only, but "
                          f"study.batch_sizes={list(study.batch_sizes)} has no full; add full or drop them.")
    _batch_sizes(list(study.batch_sizes))
    _accumulation(list(study.accumulation))
    seeds = list(study.seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"study.seeds={seeds} is invalid; give integers >= 0, e.g. study.seeds=[0,1,2].")
    for key in ("workers", "n_trials", "tune_batch"):
        if not isinstance(study[key], int) or study[key] < 1:
            raise ConfigError(f"study.{key}={study[key]!r} must be an integer >= 1.")
    if study.launcher not in LAUNCHERS:
        raise ConfigError(f"study.launcher={study.launcher!r} is invalid; valid: {', '.join(LAUNCHERS)}.")
    missing = [t for t in study.tasks if t not in study.budgets]
    if missing:
        raise ConfigError(f"study.budgets has no entry for {', '.join(missing)}; add "
                          f"study.budgets.<task>={{epochs: E, max_steps: S}}.")
    return {t: build_task({"name": t, **task_options(study, t)}).n_train for t in study.tasks}


def _compose_groups(task: str, optimizer: str) -> DictConfig:
    """The task and optimizer groups as Hydra composes them from conf/ (same files as suite-train)."""
    overrides = [f"task={task}", f"optimizer={optimizer}"]
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _register_external(name: str) -> None:
    """Register ``optimizer=<name>`` if Hydra finds a user's YAML for it (one that names ``cls``);
    any other unknown name is left for the axis check, which lists the valid ones."""
    try:
        options = OmegaConf.to_container(_compose_groups(next(iter(TASKS)), name).optimizer, resolve=True)
    except MissingConfigException:
        return
    if "cls" in options:
        register_optimizer(options)


def cell_config(cfg: DictConfig, cell: Cell) -> DictConfig:
    """The run config of one cell: the study's top-level settings + the cell's axes and budget."""
    study = cfg.study
    groups = _compose_groups(cell.task, cell.optimizer)
    base = OmegaConf.to_container(cfg, resolve=True)
    base.pop("study")
    base.pop("report", None)  # report options never reach a run
    base.update(
        task={**OmegaConf.to_container(groups.task), **task_options(study, cell.task)},
        optimizer=OmegaConf.to_container(groups.optimizer), batch_size=cell.batch_size,
        accumulation_steps=cell.accumulation_steps,
        budget={**base["budget"], **OmegaConf.to_container(study.budgets[cell.task])},
        eval={**base["eval"], "points": study.eval_points, **_task_section(study, "eval", cell.task)},
        threads=(study.get("threads") or {}).get(cell.task, base["threads"]),
    )
    base["tune"] = {**base.get("tune", {}), "n_trials": study.n_trials, "batch": study.tune_batch}
    return OmegaConf.create(base)

"""``suite-study study.baseline=<published study> study.optimizers=[...]``: your optimizers against a
published study, without retraining its optimizers.

The comparison takes everything that shapes a curve from the baseline's recorded ``config.yaml``
(tasks, batch sizes and accumulation, task options, data, dtype, sampling, protocol, targets,
budgets, caps, schedules, evaluation, tuning effort and sampler, tuning and final seeds, every
top-level run key); the command names only the optimizers to add, and may restrict the tasks
(``study.tasks=[...]``, a subset of the baseline's) and set what depends on the machine alone
(:data:`FREE`: workers, launcher, threads, device, results_dir, report options). Its cells are the
new optimizers' only; the baseline's extra runs are not repeated. The new results directory
records ``study.baseline`` (an absolute path) in its config.yaml, and the report reads the
baseline's rows and tuner exports beside its own (:mod:`suite.report.data.baseline`).

Refused before anything is written, in one line naming the difference: a baseline of another
results version (:data:`suite.types.RESULTS_VERSION`, or none recorded), an optimizer the baseline
already has, a task it lacks, a command-line override that changes anything the baseline fixed,
a results_dir that is the baseline's, runs whose identity would differ in anything but their cell
(a task default or a run default of this suite changed since), and data or models that differ:
every compared task's first final seed must start at the validation loss the baseline's runs of
that seed start at (its data, model, initialization and dtype, measured, not assumed from names).
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from suite.cell import Cell
from suite.run.prepare import prepare
from suite.store.published import Published, opened
from suite.study.context import ABSENT, setting
from suite.study.parts import parts_of
from suite.study.presets import CONF_DIR, cell_config, final_seeds
from suite.types import RESULTS_VERSION, ConfigError
from suite.train.device import DTYPES
from suite.train.evaluation import evaluate

# What a comparison may set (prefixes of dotted keys): its optimizers and tasks, and what depends
# on the machine or the report alone. Everything else comes from the baseline.
FREE = ("results_dir", "study.optimizers", "study.tasks", "study.baseline", "study.name", "study.workers",
        "study.launcher", "study.submitit", "study.threads", "threads", "device", "progress", "tune.storage",
        "tune.stale_after_s", "report", "study.report")
GROUPS = tuple(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir())  # study=..., task=...: group choices
PER_CELL = ("optimizer", "hparams", "lr", "impl", "seed", "batch_size", "accumulation_steps", "accumulation_reduction",
            "device")  # what a run's identity owes to its cell, seed or machine; the rest is the study's
START_TOLERANCE = 1e-5  # relative: the same data, model and dtype start at the same loss (up to summation order)


def typed_keys() -> list[str] | None:
    """The dotted keys the command line set (Hydra's overrides, group choices left out); None when
    the config was composed without Hydra's runtime config (then it names study.optimizers and
    study.tasks, and the rest is the baseline's)."""
    if not HydraConfig.initialized():
        return None
    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return [o.key_or_group for o in parsed if o.key_or_group not in GROUPS and not o.key_or_group.startswith("hydra.")]


def _at(config: dict, dotted: str) -> Any:
    """The setting at ``dotted`` (None where the config lacks it)."""
    value = setting(config, dotted)
    return None if value is ABSENT else value


def _put(config: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def _free(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in FREE)


def compared(cfg: DictConfig) -> DictConfig:
    """The study config of ``cfg`` against its ``study.baseline``: the baseline's protocol with the
    command's optimizers (and tasks, and machine settings); ``cfg`` itself when it names none.
    Raises :class:`ConfigError` for an unfair comparison, before anything is written."""
    if not cfg.study.get("baseline"):
        return cfg
    typed = typed_keys()
    given = OmegaConf.to_container(cfg, resolve=True)
    with opened(cfg.study.baseline) as published:
        where = f"the baseline {published.source}"
        _check_version(published)
        changed = [f"{k}={_at(given, k)!r} (the baseline's: {_at(published.config, k)!r})" for k in typed or ()
                   if not _free(k) and _at(given, k) != _at(published.config, k)]
        if changed:
            raise ConfigError(f"this comparison would change what {where} fixed: {'; '.join(changed)}. Everything "
                              f"that shapes a curve is taken from the baseline; drop the override(s), or run a study "
                              f"of your own without study.baseline.")
        new = _effective(given, published, typed)
        _check_cells(new, published, where)
        config = OmegaConf.create(new)
        _check_start(config, published, where)
    return config


def _check_version(published: Published) -> None:
    env = published.environment
    recorded = env.get("results_version")
    if recorded == RESULTS_VERSION:
        return
    made = f"suite {env.get('suite_version', '?')} at commit {env.get('git_commit', '?')}"
    raise ConfigError(f"study.baseline={published.source} was made by {made} with "
                      f"{'no results version recorded' if recorded is None else f'results version {recorded}'}; this "
                      f"suite stores results version {RESULTS_VERSION}, whose curves may differ. Republish the "
                      f"baseline with this suite (its study command), or compare with the suite that made it "
                      f"(git checkout {env.get('git_commit', '<its commit>')}).")


def _effective(given: dict, published: Published, typed: list[str] | None) -> dict:
    """The baseline's recorded config with the command's free settings, its own name and directory."""
    new = copy.deepcopy(published.config)
    chosen = typed if typed is not None else ["results_dir", "study.optimizers", "study.tasks"]
    for key in ("study.optimizers", *(k for k in chosen if _free(k) and _at(given, k) is not None)):
        _put(new, key, copy.deepcopy(_at(given, key)))
    study = new["study"]
    names = "-".join(map(str, study["optimizers"] or []))
    if "study.name" not in chosen:
        study["name"] = f"{published.config['study'].get('name')}-vs-{names}"
    if "results_dir" not in chosen:
        new["results_dir"] = f"results/{study['name']}"
    study["baseline"] = str(published.source.resolve())
    study["extras"] = {}  # the baseline's extra runs (theory, lr scaling) are its own; the report reads them
    return new


def _check_cells(new: dict, published: Published, where: str) -> None:
    """New optimizers only, tasks of the baseline only, and a results directory of their own."""
    study, base = new["study"], published.config["study"]
    theirs = sorted(published.optimizers())
    mine = study["optimizers"] if isinstance(study["optimizers"], list) else []  # not "all": those are the baseline's
    had = [o for o in mine if o in theirs]
    if had or not mine:
        raise ConfigError(f"study.optimizers: {', '.join(had) or 'none named'} "
                          f"{'is already in' if had else 'to compare with'} {where} (it has "
                          f"{', '.join(theirs)}); name only optimizers it lacks, e.g. study.optimizers=[myopt].")
    missing = [t for t in study["tasks"] or [] if t not in base["tasks"]]
    if missing or not study["tasks"]:
        raise ConfigError(f"study.tasks: {', '.join(missing) or 'empty'} "
                          f"{'is not a task of' if missing else 'names no task of'} {where} (it has "
                          f"{', '.join(base['tasks'])}); restrict to some of those, e.g. study.tasks=[{base['tasks'][0]}].")
    mine, theirs = Path(new["results_dir"]).resolve(), published.root.resolve()
    if mine == theirs or theirs in mine.parents or mine == published.source.resolve():
        raise ConfigError(f"results_dir={new['results_dir']} is {where} itself; a comparison writes to a directory "
                          f"of its own, e.g. results_dir=results/{new['study']['name']}.")


def _check_start(config: DictConfig, published: Published, where: str) -> None:
    """Each compared task's runs would be the baseline's but for the optimizer: a run of this suite
    has the identity (task options with the task's current defaults, evaluation, dtype, budget, ...)
    of the baseline's run at the task's first final seed, and its model starts at the validation
    loss that run starts at (the data, model and initialization, measured)."""
    rows = published.rows()
    starts = rows[(rows["step"] == 0) & rows["trial"].isna() & (rows["accumulation_steps"] == 1)]
    starts = starts[starts["purpose"].isna()] if "purpose" in starts else starts  # not the extra runs
    starts = starts[starts["retune"].fillna(0) == 0] if "retune" in starts else starts  # the primary tuning's
    for task in config.study.tasks:
        seed = int(final_seeds(config.study, task)[0])
        theirs = starts[(starts["task"] == task) & (starts["seed"] == seed)]
        if theirs.empty:
            continue
        run = theirs.iloc[0]
        identity = json.loads(run["config"])
        part = "target" if identity.get("target") else "budget"  # the run's protocol part, as the report reads it
        cell = Cell(task, run["optimizer"], int(run["batch_size"]))
        prepared = prepare(cell_config(config, cell, part if part in parts_of(config.study, task) else None))
        _check_identity(task, prepared.config, identity, where)
        mine, start = _start_loss(prepared, seed), float(run["val_loss"])
        if not math.isclose(mine, start, rel_tol=START_TOLERANCE):
            raise ConfigError(f"the data or model of {task} differ from {where}'s: a model at seed {seed} starts at "
                              f"validation loss {mine:.8g} here and {start:.8g} there; check the dataset files "
                              f"(task.data_dir) and the task's code against the suite that made it.")


def _check_identity(task: str, mine: dict, theirs: dict, where: str) -> None:
    """The run identities agree on everything but what a cell chooses (:data:`PER_CELL`)."""
    flat = [pd.json_normalize({k: v for k, v in d.items() if k not in PER_CELL}).iloc[0].to_dict() for d in (mine, theirs)]
    differ = [f"{k}: {flat[0].get(k)!r} here, {flat[1].get(k)!r} there" for k in sorted(set(flat[0]) | set(flat[1]))
              if flat[0].get(k) != flat[1].get(k)]
    if differ:
        raise ConfigError(f"the runs of {task} would differ from {where}'s in {'; '.join(differ)} (a default of this "
                          f"suite changed since the baseline was made?); compare with the suite that made it.")


def _start_loss(prepared, seed: int) -> float:
    """The validation loss of the freshly initialized model, evaluated as a run evaluates it."""
    spec = prepared.spec
    device, dtype = torch.device(spec.device), DTYPES[spec.dtype]
    task = prepared.task.to(device, dtype)
    model = task.make_model(seed).to(device, dtype)
    return evaluate(model, task, task.val, spec.eval.batch)[0]

"""Runs a study adds beside its cells for the report's batch-size science, tagged ``purpose``:

* ``theory``: on the conditioned linear task (known Hessian, so L, μ and κ are exact), gradient
  descent at η = 2/(L+μ) and heavy ball at its optimal (η, μ) = (4/(√L+√μ)², ((√κ−1)/(√κ+1))²),
  full batch, float64, constant lr, evaluated every step: the report fits their asymptotic linear
  rates and sets them beside (κ−1)/(κ+1) and (√κ−1)/(√κ+1); and ``theory_boundary``: GD at constant
  lrs from 0.8 to 1.25 × 2/L, whose divergence boundary the report sets beside 2/L.
* ``lr_scaling``: SGD at (B, η) with η the tuned lr of batch B, and at (kB, kη) for each factor k,
  the same epochs for all: do they trace the same curve on an epoch axis (the linear scaling rule)?

A purpose run is an ordinary run of the store whose identity carries its purpose, so it never
collides with (or is counted as) a cell's final run; a rerun skips what is stored.
"""
from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from suite.run.execute import run_frames
from suite.run.prepare import Prepared, prepare
from suite.store.identity import run_id
from suite.store.runs import RunStore
from suite.study.parts import parts_of
from suite.study.presets import cell_config
from suite.train.stacked import to_train, train_many
from suite.tune.tuner import load_tuned
from suite.types import ConfigError
from suite.cell import Cell


def _train_purpose(cfg: DictConfig, configs: list[DictConfig], purpose: str) -> int:
    """Train the configurations not stored yet (one cell: stacked where it pays, with the stored
    ones where it does, so each has the value an uninterrupted study gives it); return how many."""
    store, groups = RunStore(cfg.results_dir), {}
    for run_cfg in configs:  # train_many wants one cell: group by everything but lr and seed
        prepared = prepare(run_cfg)
        p = Prepared(prepared.spec, prepared.task, {**prepared.config, "purpose": purpose})
        groups.setdefault(f"{p.spec.optimizer}/{p.spec.batch_size}/{p.spec.hparams}", []).append(p)
    trained = 0
    for group in groups.values():
        missing = [not stored for stored in store.stored([run_id(p.config) for p in group])]
        todo = to_train(group[0].task, [p.spec for p in group], missing)
        batch = [run_frames(group[k].spec, group[k].task, group[k].config, result, tags={"purpose": purpose})
                 for k, result in zip(todo, train_many(group[0].task, [group[k].spec for k in todo])) if missing[k]]
        if batch:
            store.write_batch(batch)
        trained += sum(missing)
    return trained


BOUNDARY_FACTORS = (0.8, 0.9, 0.95, 0.98, 1.02, 1.05, 1.1, 1.25)  # × 2/L: GD diverges above 1


def theory_runs(cfg: DictConfig, options: dict[str, Any]) -> int:
    """GD and heavy ball at their theoretical optima on the conditioned linear task."""
    task, steps = options.get("task", "regression"), int(options.get("steps", 1000))
    base = cell_config(cfg, Cell(task, "sgd", "full"))
    info = prepare(base).task.info
    if "L" not in info or not (base.task.get("condition_number")):
        raise ConfigError(f"study.extras.theory needs the conditioned linear task (task={task} with "
                          f"study.task_options.{task}.condition_number set); it has no known L and μ.")
    big, small = info["L"], info["mu"]
    kappa = big / small
    fixed = {"dtype": "float64", "seed": int(cfg.study.seeds[0]), "eval": {"every_steps": 1, "noise_scale": False},
             "target": None, "stop_at_target": False, "lr_schedule": {"name": "constant", "warmup": 0},
             "budget": {"epochs": steps, "max_steps": steps, "max_seconds": None}}
    gd = OmegaConf.merge(base, fixed, {"lr": 2.0 / (big + small)})
    momentum = ((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2
    heavy = OmegaConf.merge(cell_config(cfg, Cell(task, "momentum", "full")), fixed,
                            {"lr": 4.0 / (math.sqrt(big) + math.sqrt(small)) ** 2, "optimizer": {"momentum": momentum}})
    boundary = [OmegaConf.merge(base, fixed, {"lr": f * 2.0 / big, "eval": {"every_steps": None, "points": 8}})
                for f in BOUNDARY_FACTORS]
    return (_train_purpose(cfg, [gd], "theory") + _train_purpose(cfg, [heavy], "theory")
            + _train_purpose(cfg, boundary, "theory_boundary"))


def lr_scaling_runs(cfg: DictConfig, options: dict[str, Any]) -> int:
    """SGD at (B, η_tuned(B)) and (kB, kη) for each factor k, the same ``epochs`` (default 20), one seed."""
    task, optimizer = options.get("task", "regression"), options.get("optimizer", "sgd")
    batch, factors = int(options["batch_size"]), [int(k) for k in options.get("factors", [2, 4, 8])]
    epochs = float(options.get("epochs", 20))
    part = "budget" if "budget" in parts_of(cfg.study, task) else None  # its lrs were tuned for a fixed number of epochs
    base = cell_config(cfg, Cell(task, optimizer, batch), part)
    tuned = load_tuned(cfg.results_dir, base)
    if tuned is None or tuned.get("lr") is None:
        raise ConfigError(f"study.extras.lr_scaling: the cell {task}/{optimizer}/{batch} has no tuned lr yet; "
                          f"put batch size {batch} in study.batch_sizes so the study tunes it first.")
    configs = [OmegaConf.merge(cell_config(cfg, Cell(task, optimizer, k * batch), part),
                               {"lr": k * tuned["lr"], "seed": int(cfg.study.seeds[0]), "target": None,
                                "stop_at_target": False,
                                "eval": {"noise_scale": False, "every_epochs": 0.25},
                                "budget": {"epochs": epochs, "max_steps": None, "max_seconds": None}})
               for k in [1, *factors]]
    return _train_purpose(cfg, configs, "lr_scaling")


EXTRAS = {"theory": theory_runs, "lr_scaling": lr_scaling_runs}


def run_extras(cfg: DictConfig) -> int:
    """Every extra the preset asks for (``study.extras.<name>``); returns the runs trained now."""
    node = cfg.study.get("extras")
    extras = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
    unknown = sorted(set(extras) - set(EXTRAS))
    if unknown:
        raise ConfigError(f"study.extras: unknown {', '.join(unknown)}; valid: {', '.join(EXTRAS)}.")
    return sum(EXTRAS[name](cfg, options or {}) for name, options in extras.items())

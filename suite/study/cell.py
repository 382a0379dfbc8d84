"""One cell of a study, as one job: tune it (or take the registry default), then train its final
runs over the seeds. Safe to repeat: tuning continues the cell's Optuna study to its trial count
and stored final runs are skipped by run id."""
from __future__ import annotations

import time
from typing import Any

from omegaconf import DictConfig, OmegaConf

from suite.run.execute import store_run
from suite.run.prepare import prepare, set_threads
from suite.store.runs import RunStore
from suite.train.stacked import train_many
from suite.tune.tuner import tune_cell


def final_runs(cfg: DictConfig, seeds: list[int], lr: float | None, hparams: dict[str, Any]) -> int:
    """Train the cell's chosen configuration once per seed (stacked), skipping stored runs."""
    store = RunStore(cfg.results_dir)
    todo = []
    for seed in seeds:
        run_cfg = OmegaConf.merge(cfg, {"seed": seed, "lr": lr, "optimizer": hparams})
        prepared = prepare(run_cfg)
        if not store.has(prepared.run_id):
            todo.append(prepared)
    if todo:
        results = train_many(todo[0].task, [p.spec for p in todo], progress=bool(cfg.progress))
        for p, result in zip(todo, results):
            store_run(store, p.spec, p.task, p.config, result)
    return len(todo)


def run_cell(cfg: DictConfig, seeds: list[int], tune: bool) -> dict[str, Any]:
    """Tune one cell (or take the registry default), then its final runs. Safe to repeat:
    tuning continues its Optuna study to ``tune.n_trials`` and stored final runs are skipped."""
    started = time.perf_counter()
    set_threads(cfg.get("threads"))
    lr, hparams, source = None, {}, "registry default (study.tune=false)"
    if tune:
        best = tune_cell(cfg, echo=lambda *_: None)
        if best["lr"] is None:
            source = "registry default (every tuning trial diverged)"
        else:
            lr, hparams, source = best["lr"], best.get("hparams", {}), "tuned"
    trained = final_runs(cfg, seeds, lr, hparams)
    return {"lr": lr, "lr_source": source, "trained": trained, "seconds": time.perf_counter() - started}


def run_cell_job(cfg_yaml: str, seeds: list[int], tune: bool) -> dict[str, Any]:
    """One cell in a worker process (picklable: plain arguments only)."""
    return run_cell(OmegaConf.create(cfg_yaml), seeds, tune)

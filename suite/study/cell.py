"""One cell of a study, as one job: tune it (or take the registry default), then train its final
runs over the seeds. Safe to repeat and to run in several processes at once: tuning continues the
cell's Optuna study to its trial count (waiting for trials other processes hold), and the final
runs are trained under the cell's lock (``<results_dir>/locks/<cell>.final.lock``), skipping
stored runs, so each is trained once. A process that finds the lock held waits and says for whom;
the lock dies with its holder, so a killed holder is taken over at once."""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from suite.optim.registry import get_spec, resolve_hparams
from suite.run import validate as V
from suite.run.execute import run_frames
from suite.run.prepare import Prepared, prepare
from suite.store.identity import run_config
from suite.store.locks import HolderLock
from suite.store.runs import RunStore
from suite.train import timing
from suite.train.stacked import to_train, train_many
from suite.train.schedule import total_steps
from suite.train.threads import capped_threads, use_threads
from suite.tune.tuner import cell_name_of, check_tuning, load_tuned, retuned, tune_cell


def notice(message: str) -> None:
    """A one-line note on stderr that does not break a progress bar."""
    tqdm.write(message, file=sys.stderr)


def _quiet(*_: Any) -> None:
    pass


def final_lock(results_dir: str | Path, cell: str) -> HolderLock:
    return HolderLock(Path(results_dir) / "locks" / f"{cell}.final.lock")


def _final_configs(cfg: DictConfig, seeds: list[int], lr: float | None, hparams: dict[str, Any],
                   retune: int = 0) -> list[Prepared]:
    """The cell's chosen configuration once per seed: its prepared spec (the task built once) with the
    lr (None: the registry's), the searched hyperparameters and the seed replaced. The lr was checked
    where it was chosen (by the tuner's trials, or with the study's settings). Those of re-tuning
    ``retune`` > 0 carry its tag in their identity (the same lr as another tuning's is another run)."""
    base = prepare(cfg)
    optimizer = base.spec.optimizer
    spec = dataclasses.replace(base.spec, lr=float(get_spec(optimizer).lr_default if lr is None else lr),
                               hparams=resolve_hparams(optimizer, {**base.spec.hparams, **hparams}))
    specs = [dataclasses.replace(spec, seed=seed) for seed in seeds]
    return [Prepared(s, base.task, {**run_config(s, base.config["task_options"]), **_tags(retune)}) for s in specs]


def _tags(retune: int) -> dict[str, int]:
    return {"retune": retune} if retune else {}


def final_runs(cfg: DictConfig, seeds: list[int], lr: float | None, hparams: dict[str, Any], wait: bool = True,
               echo: Callable[[str], Any] = notice, retune: int = 0) -> int | None:
    """Train the cell's chosen configuration once per seed (stacked), skipping stored runs; None if
    another process holds the cell's final runs and ``wait`` is False. ``retune``: the re-tuning
    whose choice these are (tagged on the runs; 0: the primary tuning)."""
    store = RunStore(cfg.results_dir)
    prepared = _final_configs(cfg, seeds, lr, hparams, retune)
    cell = retuned(cell_name_of(prepared[0], list(cfg.tune.get("search") or []) if "tune" in cfg else []), retune)
    lock = final_lock(cfg.results_dir, cell)

    def waiting(holder: str) -> None:
        echo(f"{cell}: waiting for {holder}, which is training this cell's final runs.")

    if not lock.acquire(blocking=wait, on_wait=waiting):
        return None
    try:
        missing = [not stored for stored in store.stored([p.run_id for p in prepared])]
        # A stack of another composition rounds differently: the stored seeds train again with the
        # missing ones where they train stacked, so every final run has the uninterrupted study's value.
        todo = to_train(prepared[0].task, [p.spec for p in prepared], missing)
        use_threads(cfg.get("threads"), prepared[0].task, prepared[0].spec)
        results = train_many(prepared[0].task, [prepared[k].spec for k in todo], progress=bool(cfg.progress))
        batch = [run_frames(prepared[k].spec, prepared[k].task, prepared[k].config, result, tags=_tags(retune))
                 for k, result in zip(todo, results) if missing[k]]
        if batch:
            store.write_batch(batch)
        return sum(missing)
    finally:
        lock.release()


@dataclass(frozen=True)
class Job:
    """One cell as a job (picklable: plain values only; its configs are plain containers that nothing changes)."""

    label: str
    config: dict[str, Any]  # the cell's run config (its ``seed``: the tuning trials')
    seeds: tuple[int, ...]  # the final runs'
    tuning: dict[str, Any] | None = None  # the run config whose tuned lr the cell uses (None: not tuned)
    lr: float | None = None  # the lr of an untuned cell (None: the registry's default)
    retune: int = 0  # the re-tuning this job tunes and trains for (0: the primary tuning)

    def with_threads(self, cores: int | None) -> Job:
        """No progress bars, and at most ``cores`` torch threads."""
        def limit(config: dict[str, Any] | None) -> dict[str, Any] | None:
            if config is None:
                return None
            threads = config.get("threads") if cores is None else capped_threads(config.get("threads"), cores)
            return {**config, "progress": False, "threads": threads}

        return dataclasses.replace(self, config=limit(self.config), tuning=limit(self.tuning))


def check_job(job: Job) -> float:
    """Every check :func:`run_cell` makes before it trains, made without training or writing anything:
    the cell's run config (threads, budget, evaluation, target against its task, ...; the final seeds
    are checked with the study's axes) and its tuning config. Returns the cell's work
    (:func:`run_work`), the order a pool of workers starts cells in."""
    V.threads(job.config.get("threads"))
    if job.tuning is not None:
        prepared = check_tuning(job.tuning)
    if job.tuning != job.config:  # else the tuning config was this one (a task is costly to build twice)
        prepared = prepare({**job.config, "lr": job.lr})
    return run_work(prepared)


def run_work(prepared: Prepared) -> float:
    """A run's arithmetic at its step cap, roughly: 2 × the model's parameters (a dense layer's
    forward FLOPs per sample; a convolution does more) × the batch × its steps. Counted without
    running the model (torch's FLOP counter imports torch._dynamo, seconds a driver that never
    trains would wait for); trials stop early, so it ranks cells, no more."""
    spec = prepared.spec
    parameters = sum(p.numel() for p in prepared.task.make_model(spec.seed).parameters())
    return float(2 * parameters * spec.batch_size * total_steps(spec, prepared.task.n_train))


def _choice(job: Job, best: dict[str, Any] | None) -> tuple[float | None, dict[str, Any], str]:
    """The lr, searched hyperparameters and lr source of a cell's final runs, from its tuning export
    ``best`` (None for an untuned cell)."""
    if job.tuning is None:
        return job.lr, {}, f"fixed (study.lr={job.lr})" if job.lr is not None else "registry default (study.tune=false)"
    if best["lr"] is None:
        return None, {}, best["lr_source"]
    return best["lr"], best.get("hparams", {}), best["lr_source"]


def run_cell(job: Job, wait: bool = True, echo: Callable[[str], Any] = notice) -> dict[str, Any] | None:
    """Tune one cell (or take a fixed or the registry's lr), then its final runs. Safe to repeat. With
    ``wait=False``, None when another process holds the cell's trials or final runs (come back later)."""
    started, phases = time.perf_counter(), timing.totals()
    cfg = OmegaConf.create(job.config)
    best = None
    if job.tuning is not None:
        best = tune_cell(OmegaConf.create(job.tuning), echo=_quiet, wait=wait, notice=echo)
        if best is None:
            return None
    tuned = time.perf_counter()
    lr, hparams, source = _choice(job, best)
    trained = final_runs(cfg, list(job.seeds), lr, hparams, wait, echo, job.retune)
    if trained is None:
        return None
    end = time.perf_counter()
    return {"lr": lr, "lr_source": source, "trained": trained, "seconds": end - started,
            "tuning_seconds": tuned - started, "final_seconds": end - tuned, "phases": timing.delta(phases)}


def _bisection_left(export: dict[str, Any], tune: DictConfig) -> bool:
    """Whether the cell may still run bisection rounds (an unresolved optimum with trials of
    ``tune.resolve`` left, e.g. a study continued with a larger ``study.resolve``)."""
    resolved = (export.get("resolution") or {}).get("resolved", False)
    return not resolved and export.get("n_resolving", 0) < int(tune.get("resolve") or 0)


def finished_summary(job: Job) -> dict[str, Any] | None:
    """What ``run_cell`` would return for a finished cell (its tuning exported after all its trials,
    every final run stored), without running anything or writing; None if the cell has work left."""
    best = None
    if job.tuning is not None:
        tuning = OmegaConf.create(job.tuning)
        best = load_tuned(tuning.results_dir, tuning)
        if best is None or best.get("n_finished", 0) < tuning.tune.n_trials or _bisection_left(best, tuning.tune):
            return None
    lr, hparams, source = _choice(job, best)
    cfg = OmegaConf.create(job.config)
    store = RunStore(cfg.results_dir)
    if not all(store.stored([p.run_id for p in _final_configs(cfg, list(job.seeds), lr, hparams, job.retune)])):
        return None
    return {"lr": lr, "lr_source": source, "trained": 0, "seconds": 0.0}

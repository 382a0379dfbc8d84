"""Learning-rate tuning with Optuna: one study per cell, trials trained K at a time, best exported.

A trial is an ordinary run of the suite: its lr (and searched hyperparameters) go into the cell's
:class:`RunSpec`, ``train_many`` trains the K trials asked together, and each curve is stored in
the results store tagged ``study`` and ``trial``. The objective (``suite.tune.objective``) is the
validation loss at the final evaluation, or, when the cell has a target (the ``target`` protocol),
the steps to reach it (a trial stops once that step is located); test is never read. At every
evaluation the pruner is given the validation value. A diverged trial is finished with a finite
penalty and ``diverged=True``: NaN would give the sampler no signal, and "diverged" is a result,
not a crash. When the best lr sits within a quarter decade of an end of the search range, the
range is widened there and the study continues (``suite.tune.widening``); the final range, and
any edge that remains, go into the export.

Several workers (processes, machines) may run the same cell against one storage: they share its
study and together stop at exactly ``n_trials`` finished trials (see :mod:`suite.tune.claims`); a
worker that finds the remaining trials held by others waits for them (and says so), so every
worker returns the finished study. Trials are claimed in batches aligned to ``tune.batch`` slots
and stored before they are told (:mod:`suite.tune.trials`), so an interrupt anywhere, then a
rerun, gives the uninterrupted run's trials, values and tuned configuration.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Callable, Mapping

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState
from tqdm.auto import tqdm

from suite.run import validate as V
from suite.run.prepare import Prepared, prepare
from suite.store.identity import cell_identity, cell_name
from suite.store.runs import RunStore
from suite.store.tuned import read_tuned, write_tuned
from suite.train.schedule import total_steps
from suite.train.threads import use_threads
from suite.tune.claims import (StackBlindPruner, claim, fail_abandoned, held_elsewhere, next_slot, record_stacks,
                               release, slot_of)
from suite.tune.journal import Journal
from suite.tune.objective import diverged_penalty
from suite.tune.refine import queue_rounds, refine, resolve, resolving_trials
from suite.tune.space import (PRUNERS, SAMPLERS, TuneSpec, first_checked_step, suggest, tune_spec,
                              values_of)
from suite.tune.storage import check_url, default_journal, mask_url, open_storage
from suite.tune.summary import best_trial, counts, progress, report, summarize
from suite.tune.trials import CellTuning, Claimed, redo_lost_runs, release_all, run_batch, trial_runs
from suite.tune.widening import decide, new_region_lrs
from suite.types import ConfigError

__all__ = ["tune_cell", "check_tuning", "cell_name_of", "load_tuned", "diverged_penalty", "report", "counts",
           "best_trial"]

POLL_S = 0.5  # how often a worker waiting for others' trials looks again


def _plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return {**c, "lr": None}  # the lr is what a study searches; never resolve lr=tuned here


def _searched_of(cfg: Mapping[str, Any]) -> list[str]:
    return list((cfg.get("tune") or {}).get("search") or [])


def cell_name_of(cell: Prepared | DictConfig | Mapping[str, Any], search=None) -> str:
    """The cell name (its Optuna study's name) of a composed config (its ``tune.search`` counts) or
    a Prepared run."""
    if isinstance(cell, Prepared):
        return cell_name(cell.spec, cell.config["task_options"], cell.task.n_train, search or ())
    c = _plain(cell)
    prepared = prepare(c)
    return retuned(cell_name_of(prepared, _searched_of(c) if search is None else search),
                   int((c.get("tune") or {}).get("retune") or 0))


def retuned(name: str, retune: int) -> str:
    """The tuning study (and export) name of re-tuning ``retune`` of cell ``name`` (0: ``name``)."""
    return f"{name}~r{retune}" if retune else name


def load_tuned(results_dir, cell) -> dict | None:
    """The exported best configuration of ``cell`` (a cell name, config or Prepared), or ``None``."""
    return read_tuned(results_dir, cell if isinstance(cell, str) else cell_name_of(cell))


def _open_study(name: str, url: str, tspec: TuneSpec, base: Prepared, storage=None) -> optuna.Study:
    storage = open_storage(url) if storage is None else storage
    pruner = StackBlindPruner(PRUNERS[tspec.pruner](tspec, total_steps(base.spec, base.task.n_train)))
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True,
                                sampler=SAMPLERS[tspec.sampler](tspec, tspec.seed), pruner=pruner)
    record = json.loads(json.dumps(tspec.sampler_record()))
    recorded = study.user_attrs.get("sampler")
    if recorded is None:
        study.set_user_attr("sampler", record)
        study.set_user_attr("cell", json.loads(json.dumps(cell_identity(
            base.spec, base.config["task_options"], tspec.searched), default=str)))
    elif recorded != record:
        raise ConfigError(
            f"study {name} in {mask_url(url)} was started with sampler settings {recorded}; this command asks "
            f"for {record}. Continue it with the same tune.sampler, tune.seed and sampler options, or start "
            f"a separate study with another results_dir or tune.storage."
        )
    return study


def _claim_one(cell: CellTuning, slot: int) -> Claimed | None:
    """Ask (the sampler seeded by the slot the ask should take) and draw the trial's values at once,
    so a trial is never left without its parameters."""
    cell.study.sampler = cell.sampler_for(slot)
    trial = claim(cell.study, cell.tspec.n_trials, cell.worker)
    if trial is None:
        return None
    got = trial.user_attrs["slot"]
    if got != slot:  # another worker asked in between: draw for the slot this trial really holds
        cell.study.sampler = cell.sampler_for(got)
    suggest(trial, cell.tspec)
    specs, configs = trial_runs(cell, trial.params, got)
    return Claimed(trial, got, specs, configs)


def claim_batch(cell: CellTuning) -> list[Claimed]:
    """Up to ``tune.batch`` trials, never across a multiple of ``tune.batch`` slots, each with its
    stack recorded (a retry keeps its first one): whoever trains a trial again trains it with the
    same trials, so every value is the uninterrupted run's."""
    batch: list[Claimed] = []
    boundary = None
    while len(batch) < cell.tspec.batch:
        slot = next_slot(cell.study.get_trials(deepcopy=False), cell.tspec.n_trials)
        if slot is None or (boundary is not None and slot >= boundary):
            break
        if boundary is None:
            boundary = (slot // cell.tspec.batch + 1) * cell.tspec.batch
        try:
            claimed = _claim_one(cell, slot)
        except BaseException as e:
            release_all(cell, batch, e)
            raise
        if claimed is None:  # other workers took the last slots
            break
        batch.append(claimed)
    try:
        for c, stack in zip(batch, record_stacks([c.trial for c in batch], [c.slot for c in batch])):
            c.stack = stack
    except BaseException as e:
        release_all(cell, batch, e)
        raise
    return batch


def _settle_cuts(cell: CellTuning, echo: Callable[[str], Any]) -> None:
    """Report the torn records the journal's lock cut; fail and queue again the trial each belonged to."""
    storage = cell.journal
    if storage is None:
        return
    for cut in storage.take_cuts():
        note = ""
        try:
            trial = storage.get_trial(cut.trial_id) if cut.trial_id is not None else None
        except KeyError:
            trial = None
        if trial is not None and trial.state == TrialState.RUNNING:
            release(cell.study, trial, retry=True)
            note = f"; trial {trial.number}, whose record it was, is failed and queued again with its parameters"
        echo(f"journal {cut.path}: cut a torn last record (line {cut.line}, {cut.nbytes} bytes) left by an "
             f"interrupted or failed write{note}.")


def _wait(cell: CellTuning, echo: Callable[[str], Any], said: bool) -> bool:
    """Wait a moment for trials other workers hold (saying so once); free those of dead workers."""
    held = held_elsewhere(cell.study.get_trials(deepcopy=False), cell.worker)
    if held and not said:
        holders = sorted({t.user_attrs.get("worker", "an unknown worker") for t in held})
        echo(f"{cell.name}: waiting for trial(s) {', '.join(str(t.number) for t in held)} held by "
             f"{', '.join(holders)} (another process tuning this cell); if that worker is lost on another "
             f"machine, set tune.stale_after_s=<seconds> to take its trials over.")
        said = True
    time.sleep(POLL_S)
    fail_abandoned(cell.study, cell.tspec.stale_after_s, echo, cell.worker)
    return said


def _checked(c: dict[str, Any]) -> tuple[Prepared, TuneSpec]:
    """The trials' base run and the tuning settings, every value checked (the storage URL too) before
    anything is written."""
    # Trials never read the test split and need no noise scale; a trial with a target stops at it.
    c["eval"] = {**(c.get("eval") or {}), "test": False, "noise_scale": False}
    if c.get("target") is not None:
        c["stop_at_target"] = True
    V.threads(c.get("threads"))  # checked before any work; set by _open_cell
    base = prepare(c)
    tspec = tune_spec(c.get("tune") or {}, base.spec.optimizer)
    if tspec.storage is not None:
        check_url(tspec.storage)
    return base, tspec


def check_tuning(cfg: DictConfig | Mapping[str, Any]) -> Prepared:
    """Every check :func:`tune_cell` makes before it writes anything (a study checks all its cells
    first); the trials' base run."""
    return _checked(_plain(cfg))[0]


def _open_cell(c: dict[str, Any], echo: Callable[[str], Any], survey: bool) -> CellTuning:
    """Validate everything (run config, tune config, results dir, storage) before any trial runs."""
    base, tspec = _checked(c)
    use_threads(c.get("threads"), base.task, base.spec)
    store = RunStore(c["results_dir"])
    if survey:
        store.survey(echo)
    store.ensure_writable()
    name = retuned(cell_name(base.spec, base.config["task_options"], base.task.n_train, tspec.searched), tspec.retune)
    url = tspec.storage or default_journal(c["results_dir"], name)
    storage = open_storage(url)
    cell = CellTuning(name, _open_study(name, url, tspec, base, storage), tspec, base, store, url,
                      journal=storage if isinstance(storage, Journal) else None, initial_range=tspec.lr_range,
                      initial_trials=tspec.n_trials,
                      checked_from=first_checked_step(tspec, total_steps(base.spec, base.task.n_train)))
    _widened_range(cell)
    queue_rounds(cell)  # the rest of a bisection round a kill interrupted
    _settle_cuts(cell, echo)
    fail_abandoned(cell.study, tspec.stale_after_s, echo, cell.worker)
    redo_lost_runs(cell, echo)
    return cell


def _widened_range(cell: CellTuning) -> None:
    """The study's search range and trial count as widened, refined and bisected so far (recorded in
    the study, so every worker and every rerun searches the same range)."""
    attrs = cell.study.user_attrs
    if "lr_range" in attrs or "refined" in attrs:  # widened or refined (each marked done last)
        cell.tspec = dataclasses.replace(cell.tspec, n_trials=attrs["n_trials"])
    if "lr_range" in attrs:
        cell.tspec = dataclasses.replace(cell.tspec, lr_range=tuple(attrs["lr_range"]))
        cell.widenings = int(attrs.get("widenings", 0))
    cell.tspec = dataclasses.replace(cell.tspec, n_trials=max(cell.tspec.n_trials, resolving_trials(attrs)))


def _widen(cell: CellTuning) -> bool:
    """After the study's trials: widen the range where the best lr sits at its edge and queue more
    trials there (True), or record why the optimum stays at an edge (False)."""
    _widened_range(cell)
    trials = cell.study.get_trials(deepcopy=False)
    best = best_trial(trials)
    if not cell.tspec.widen:
        return False
    lr = None if best is None else values_of(best.params, cell.tspec)[0]
    diverged = [values_of(t.params, cell.tspec)[0] for t in trials if t.user_attrs.get("diverged") and "lr" in t.params]
    decision = decide(lr, cell.tspec.lr_range, diverged, cell.widenings)
    cell.edge = decision.edge
    if not decision.widened:
        return False
    first, lrs = cell.tspec.n_trials, new_region_lrs(cell.tspec.lr_range, decision.lr_range,
                                                      max(cell.initial_trials // 2, cell.tspec.batch))
    cell.study.set_user_attr("n_trials", first + len(lrs))
    cell.study.set_user_attr("widenings", cell.widenings + 1)
    taken = {slot_of(t) for t in trials}
    for slot, value in enumerate(lrs, start=first):  # explore the new region first: TPE alone would stay home
        if slot not in taken:
            cell.study.enqueue_trial({"lr": value}, user_attrs={"slot": slot, "explores": True}, skip_if_exists=False)
    cell.study.set_user_attr("lr_range", list(decision.lr_range))  # last: the range marks the widening done
    _widened_range(cell)
    return True


def _finished(cell: CellTuning) -> int:
    return counts(cell.study.get_trials(deepcopy=False))["n_finished"]


def tune_cell(cfg: DictConfig | Mapping[str, Any], echo: Callable[[str], Any] = print, wait: bool = True,
              notice: Callable[[str], Any] | None = None, survey: bool = False) -> dict[str, Any] | None:
    """Tune one cell until its study holds ``tune.n_trials`` finished trials (waiting for trials other
    workers hold); export and return the best. ``wait=False``: return None instead of waiting.
    ``notice`` (default ``echo``) gets the one-line notes on recoveries and waits. ``survey``: look over
    every stored file of the results directory first (``suite-tune``; a study does it once for all cells)."""
    optuna.logging.set_verbosity(logging.WARNING)  # per-trial INFO lines would drown the progress bar
    notice = notice or echo
    c = _plain(cfg)
    cell = _open_cell(c, notice, survey)
    tspec = cell.tspec
    echo(f"study {cell.name}: {tspec.n_trials} trials wanted, {_finished(cell)} finished so far "
         f"(storage {mask_url(cell.url)})")
    bar = tqdm(total=tspec.n_trials, unit="trial", desc=cell.name, disable=not c.get("progress", True),
               dynamic_ncols=True)
    said = False
    with bar:
        progress(cell, bar)
        while True:
            batch = claim_batch(cell)
            if batch:
                run_batch(cell, batch)
                progress(cell, bar)
                _settle_cuts(cell, notice)
                fail_abandoned(cell.study, tspec.stale_after_s, notice, cell.worker)
            elif _finished(cell) >= cell.tspec.n_trials:
                if not (_widen(cell) or refine(cell) or resolve(cell)):
                    break
                bar.total = cell.tspec.n_trials
            elif not wait:
                return None
            else:
                said = _wait(cell, notice, said)
    result = summarize(cell)  # exported even without an lr: the report reads why (lr_source, edge)
    result["path"] = str(write_tuned(c["results_dir"], cell.name, result))
    echo(report(result))
    return result

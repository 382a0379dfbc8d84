"""Trials as runs: a claimed batch trained (or found stored), stored, then told; lost run files redone.

A trial is an ordinary run of the suite tagged ``study`` (the cell) and ``trial`` (its slot, see
``suite.tune.claims``); the tags are part of its identity, so a trial never shares a run id with a
plain run, and a trial redone after an interrupt (same slot, same parameters) *is* the same run.

With ``tune.seeds`` a trial trains once per seed (all in the batch's stack where stacking pays)
and scores the mean of its runs' values (a noisy objective otherwise rewards a lucky seed); its
runs are ``run_ids``, the first also ``run_id``.

A batch is trained as one stack, all its rows are stored, and only then is any trial told. So a
rerun after a kill finds either a batch none of whose trials was told (all queued again), or a
batch whose untold trials are all stored (their outcome is read back, their reports replayed,
nothing is trained). A trial told complete whose run file is missing is retrained at the next
start and its value checked against the one its study keeps.

Whatever retrains a trial trains it in the stack recorded at its first claim (``stack``, see
``suite.tune.claims``), with the other members rebuilt from the study where this worker does not
hold them (their results are dropped): a stacked configuration's numbers depend on its stack's
composition and order only (``suite.train.stacked.StackEngine``), so a retried batch split between
two workers, or a lost run file, gives bit for bit the value the first training gave.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from suite.optim.registry import check_lr, resolve_hparams
from suite.run.execute import run_frames
from suite.run.prepare import Prepared
from suite.store.identity import run_config, run_id
from suite.store.runs import RunStore
from suite.train.stacked import to_train, train_many
from suite.tune.claims import FINISHED, STACK, params_of_slot, release, slot_of, worker_id
from suite.tune.journal import Journal
from suite.tune.objective import Outcome, reports_of
from suite.tune.space import SAMPLERS, AskTellGridSampler, TuneSpec, values_of
from suite.types import RunResult, RunSpec, StoreError, SuiteError

Runs = dict[int, tuple[list[RunSpec], list[dict[str, Any]]]]  # slot -> its runs' specs and identities (one per seed)


@dataclasses.dataclass
class CellTuning:
    """The tuning of one cell in this worker: its Optuna study, search settings, base run and store
    (small, so functions take one argument, not ten)."""

    name: str
    study: optuna.Study
    tspec: TuneSpec
    base: Prepared
    store: RunStore
    url: str
    journal: Journal | None = None  # the storage, where it is the embedded journal (torn records it cut)
    worker: str = dataclasses.field(default_factory=worker_id)
    ran: int = 0  # trials this worker trained or settled
    initial_range: tuple[float, float] | None = None  # the configured lr range, before any widening
    initial_trials: int = 0  # the configured trial count
    widenings: int = 0
    edge: str | None = None  # why the best lr still sits at an edge of its range (None: interior)
    checked_from: int | None = None  # the first step the pruner reads (None: none; space.first_checked_step)

    def tags(self, slot: int) -> dict[str, Any]:
        """What marks a trial's runs: its study and slot, and its re-tuning where it is one."""
        return {"study": self.name, "trial": slot, **({"retune": self.tspec.retune} if self.tspec.retune else {})}

    def sampler_for(self, slot: int) -> optuna.samplers.BaseSampler:
        # Seeded per slot: reproducible for one worker and after an interrupt (a redone trial keeps
        # its slot), and concurrent workers (same tune.seed) do not all draw the same startup lrs.
        # The seed is hashed (SeedSequence) from (tune.seed, cell, slot): MT19937 seeded with
        # consecutive small integers gives correlated first draws, and cells would otherwise all try
        # the same learning rates.
        entropy = [self.tspec.seed, zlib.crc32(self.name.encode()), slot]
        sampler = SAMPLERS[self.tspec.sampler](self.tspec, int(np.random.SeedSequence(entropy).generate_state(1)[0]))
        if isinstance(sampler, AskTellGridSampler):
            sampler.slot = slot
        return sampler


@dataclasses.dataclass
class Claimed:
    """A claimed trial with its slot, and its runs (one per tuning seed): specs and identities."""

    trial: optuna.Trial
    slot: int
    specs: list[RunSpec]
    configs: list[dict[str, Any]]
    stack: list[int] = dataclasses.field(default_factory=list)  # the slots it trains with (recorded)

    def __post_init__(self):
        self.stack = self.stack or [self.slot]  # alone until its batch's stack is recorded

    @property
    def run_ids(self) -> list[str]:
        return [run_id(c) for c in self.configs]


def trial_runs(cell: CellTuning, params: dict[str, float], slot: int) -> tuple[list[RunSpec], list[dict[str, Any]]]:
    """The run specs and identities of the trial in ``slot`` with Optuna parameters ``params``."""
    lr, searched = values_of(params, cell.tspec)
    # The task is built once per study (prepare would reload Fashion-MNIST per trial); the
    # trial's values pass the same checks prepare applies.
    hparams = resolve_hparams(cell.base.spec.optimizer, {**cell.base.spec.hparams, **searched})
    spec = dataclasses.replace(cell.base.spec, lr=check_lr(lr), hparams=hparams)
    specs = [dataclasses.replace(spec, seed=seed) for seed in (cell.tspec.seeds or (spec.seed,))]
    return specs, [{**run_config(s, cell.base.config["task_options"]), **cell.tags(slot)} for s in specs]


def run_ids_of(t: FrozenTrial) -> list[str]:
    return list(t.user_attrs.get("run_ids") or [t.user_attrs["run_id"]])


def _tell(cell: CellTuning, c: Claimed, o: Outcome) -> None:
    """Tell a stored trial's outcome (a told trial always has its rows)."""
    for step, val in read_by_pruner(cell, o.reports):  # from the stored rows: what the pruner saw
        c.trial.report(val, step)
    c.trial.set_user_attr("run_id", c.run_ids[0])
    if len(c.run_ids) > 1:
        c.trial.set_user_attr("run_ids", c.run_ids)
    if o.pruned:
        told = cell.study.tell(c.trial, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        if o.diverged:
            c.trial.set_user_attr("diverged", True)
            c.trial.set_user_attr("diverged_step", o.diverged_step)
        if o.collapsed:
            c.trial.set_user_attr("collapsed", True)
        told = cell.study.tell(c.trial, o.value, skip_if_finished=True)
    if told.state == TrialState.FAIL:
        raise StoreError(
            f"trial {c.trial.number} of {cell.name} was marked FAIL by another worker while this one trained it "
            f"(tune.stale_after_s too small, or two hosts share a hostname); its rows are stored as run(s) "
            f"{', '.join(c.run_ids)}. Raise tune.stale_after_s and re-run to continue the study."
        )
    cell.ran += 1


def train_stack(cell: CellTuning, stack: list[int], own: Runs, needed: Callable[[int, int], bool],
                prune: Callable[[int, dict], bool]) -> dict[tuple[int, int], RunResult]:
    """Train the ``needed`` runs (slot, seed index) of ``own`` trials as members of their ``stack``:
    when the stack trains stacked, all its runs train together (members not in ``own`` rebuilt
    from the study), else the needed runs alone (a single run is exact whatever trains beside it).
    ``prune(slot, row)`` decides for an own trial's first run. Returns own trials' results."""
    members = {slot: own.get(slot) or _rebuilt(cell, slot) for slot in stack}
    pairs = [(slot, j) for slot, runs in members.items() if runs for j in range(len(runs[0]))]
    specs = [members[slot][0][j] for slot, j in pairs]
    todo = to_train(cell.base.task, specs, [slot in own and needed(slot, j) for slot, j in pairs])

    def on_eval(k: int, row: dict) -> bool:
        slot, j = pairs[todo[k]]
        return slot in own and j == 0 and prune(slot, row)  # the pruner follows the first seed

    results = train_many(cell.base.task, [specs[k] for k in todo], on_eval=on_eval)
    return {pairs[k]: result for k, result in zip(todo, results) if pairs[k][0] in own}


def _rebuilt(cell: CellTuning, slot: int) -> tuple[list[RunSpec], list[dict[str, Any]]] | None:
    params = params_of_slot(cell.study, slot)
    return None if params is None else trial_runs(cell, params, slot)


def read_by_pruner(cell: CellTuning, reports: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The (step, value) reports the study's pruner reads; the others are not sent to Optuna (each
    report is a storage write, and with ``tune.pruner=none`` none is read)."""
    first = cell.checked_from
    return [] if first is None else [(step, v) for step, v in reports if step >= first]


def _pruned(cell: CellTuning, c: Claimed, row: dict) -> bool:
    """Give a trial's evaluation row to its study's pruner where it reads it; whether it stops the trial."""
    reported = read_by_pruner(cell, reports_of(c.specs[0], [row]))
    if not reported:
        return False
    c.trial.report(reported[0][1], reported[0][0])
    return c.trial.should_prune()


def _train(cell: CellTuning, batch: list[Claimed], stored: list[list[bool]]) -> dict[int, Outcome]:
    """Train the batch's unstored runs, each trial in its recorded stack; store them."""
    task, index, results = cell.base.task, {c.slot: i for i, c in enumerate(batch)}, {}
    for stack in dict.fromkeys(tuple(c.stack) for c in batch):
        own = {c.slot: (c.specs, c.configs) for c in batch if tuple(c.stack) == stack}
        results.update(train_stack(cell, list(stack), own, lambda slot, j: not stored[index[slot]][j],
                                   lambda slot, row: _pruned(cell, batch[index[slot]], row)))
    runs = [run_frames(batch[index[slot]].specs[j], task, batch[index[slot]].configs[j], result,
                       tags=cell.tags(slot))
            for (slot, j), result in results.items() if not stored[index[slot]][j]]
    if runs:
        cell.store.write_batch(runs)  # one commit: all the batch's runs are stored, or none
    return {i: Outcome.of_results(c.specs, task.n_train, [results[(c.slot, j)] for j in range(len(c.specs))])
            for i, c in enumerate(batch) if all((c.slot, j) in results for j in range(len(c.specs)))}


def run_batch(cell: CellTuning, batch: list[Claimed]) -> None:
    """Train (or read back) the batch, store every run, then tell every trial."""
    told: set[int] = set()
    try:
        flat = iter(cell.store.stored([rid for c in batch for rid in c.run_ids]))
        stored = [[next(flat) for _ in c.run_ids] for c in batch]
        fresh = _train(cell, batch, stored) if not all(all(s) for s in stored) else {}
        for i, c in enumerate(batch):
            n = cell.base.task.n_train
            _tell(cell, c, fresh.get(i) or Outcome.of_rows(c.specs, n, cell.store, c.run_ids))
            told.add(c.trial.number)
        if cell.journal is not None:
            cell.journal.sync()  # the batch's tells reach the disk: one fsync per batch
    except BaseException as e:  # interrupted or failed: queue the untold trials again, keep what is stored
        release_all(cell, [c for c in batch if c.trial.number not in told], e)
        raise


def release_all(cell: CellTuning, batch: list[Claimed], error: BaseException) -> None:
    """Close claimed trials that will not be told; queue them again unless a bug stopped them (an
    interrupt, a full disk or a bad file costs a trial nothing but time)."""
    retry = not isinstance(error, Exception) or isinstance(error, (OSError, SuiteError))
    for c in batch:
        try:
            release(cell.study, c.trial, retry=retry)
        except OSError:  # the journal's disk is full too: the next start fails and queues them
            return


def _check_agrees(cell: CellTuning, t: FrozenTrial, o: Outcome, echo: Callable[[str], object]) -> None:
    got = o.value if not o.pruned else (o.reports[-1][1] if o.reports else None)
    if got == t.value:
        verdict = f"equals the {t.value!r} the study keeps"
    else:
        why = "" if STACK in t.user_attrs else (" (the study did not record the trials it was stacked with, so it was "
                                                "retrained with its own runs, which rounds differently)")
        verdict = f"is {got!r}, which differs from the {t.value!r} the study keeps{why}"
    echo(f"{cell.name}: trial {t.number} (slot {slot_of(t)}) had no stored run; retrained it as run "
         f"{t.user_attrs['run_id']}: its value {verdict}.")


def redo_lost_runs(cell: CellTuning, echo: Callable[[str], object]) -> int:
    """Retrain the finished trials' runs whose file is missing (each with its parameters, under its
    run id, in its recorded stack), so the store and the study agree again; a damaged file is an
    error that says so."""
    lost = _lost_runs(cell, echo)
    for stack, trials in lost.items():
        _retrain(cell, list(stack), trials, echo)
    return sum(len(trials) for trials in lost.values())


Lost = tuple[FrozenTrial, list[RunSpec], list[dict[str, Any]], list[int]]  # a trial, its runs, the missing ones


def _lost_runs(cell: CellTuning, echo: Callable[[str], object]) -> dict[tuple[int, ...], list[Lost]]:
    """The finished trials with missing run files that can be rebuilt, by recorded stack."""
    lost: dict[tuple[int, ...], list[Lost]] = {}
    cell.store.index.refresh()
    for t in cell.study.get_trials(deepcopy=False, states=FINISHED):
        if "run_id" not in t.user_attrs:
            continue
        rids = run_ids_of(t)
        missing = [k for k, rid in enumerate(rids) if not cell.store.has(rid)]
        if not missing:
            continue
        specs, configs = trial_runs(cell, t.params, slot_of(t))
        if [run_id(c) for c in configs] != rids:  # recorded by another version: its identity cannot be rebuilt
            echo(f"{cell.name}: trial {t.number} lacks stored runs {', '.join(rids[k] for k in missing)} and "
                 f"cannot be rebuilt under those ids; its study value {t.value!r} stays, without rows.")
            continue
        lost.setdefault(tuple(t.user_attrs.get(STACK) or [slot_of(t)]), []).append((t, specs, configs, missing))
    return lost


def _retrain(cell: CellTuning, stack: list[int], trials: list[Lost], echo: Callable[[str], object]) -> None:
    """Retrain lost trials of one stack (a pruned one stops where it was pruned); store the missing runs."""
    task = cell.base.task
    stops = {slot_of(t): max(t.intermediate_values) for t, *_ in trials
             if t.state == TrialState.PRUNED and t.intermediate_values}
    results = train_stack(cell, stack, {slot_of(t): (specs, configs) for t, specs, configs, _ in trials},
                          lambda slot, j: True, lambda slot, row: slot in stops and row["step"] >= stops[slot])
    cell.store.write_batch([run_frames(specs[k], task, configs[k], results[(slot_of(t), k)],
                                       tags=cell.tags(slot_of(t)))
                            for t, specs, configs, missing in trials for k in missing])
    for t, specs, configs, missing in trials:
        slot = slot_of(t)
        outcome = Outcome.of_results(specs, task.n_train, [results[(slot, j)] for j in range(len(specs))])
        outcome.reports = reports_of(specs[0], results[(slot, 0)].rows)
        _check_agrees(cell, t, outcome, echo)

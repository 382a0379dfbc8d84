"""Trials as runs: a claimed batch trained (or found stored), stored, then told; lost run files redone.

A trial is an ordinary run of the suite tagged ``study`` (the cell) and ``trial`` (its slot, see
``suite.tune.claims``); the tags are part of its identity, so a trial never shares a run id with a
plain run, and a trial redone after an interrupt (same slot, same parameters) *is* the same run.

A batch is trained as one stack, all its rows are stored, and only then is any trial told. So a
rerun after a kill finds either a batch none of whose trials was told (all queued again: trained
again as the same stack, so every value is bit-identical to an uninterrupted run's), or a batch
whose untold trials are all stored (their outcome is read back, their reports replayed, nothing is
trained). A trial told complete whose run file is missing is retrained at the next start and its
value checked against the one its study keeps.
"""
from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from suite.optim.registry import check_lr, resolve_hparams
from suite.run.execute import store_run
from suite.run.prepare import Prepared
from suite.store.identity import run_config, run_id
from suite.store.runs import RunStore
from suite.train.stacked import stacking_pays, train_many
from suite.tune.claims import FINISHED, release, slot_of, worker_id
from suite.tune.journal import Journal
from suite.tune.objective import intermediate, trial_value
from suite.tune.space import SAMPLERS, AskTellGridSampler, TuneSpec, values_of
from suite.types import RunResult, RunSpec, StoreError, SuiteError

AGREE_RTOL = 1e-4  # a redone trial and its study agree to float tolerance (stacks of other sizes round differently)


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
    """A claimed trial with its slot, its run spec and its run's identity."""

    trial: optuna.Trial
    slot: int
    spec: RunSpec
    config: dict[str, Any]

    @property
    def run_id(self) -> str:
        return run_id(self.config)


def trial_run(cell: CellTuning, params: dict[str, float], slot: int) -> tuple[RunSpec, dict[str, Any]]:
    """The run spec and identity of the trial in ``slot`` with Optuna parameters ``params``."""
    lr, searched = values_of(params, cell.tspec)
    # The task is built once per study (prepare would reload Fashion-MNIST per trial); the
    # trial's values pass the same checks prepare applies.
    hparams = resolve_hparams(cell.base.spec.optimizer, {**cell.base.spec.hparams, **searched})
    spec = dataclasses.replace(cell.base.spec, lr=check_lr(lr), hparams=hparams)
    return spec, {**run_config(spec, cell.base.config["task_options"]), "study": cell.name, "trial": slot}


@dataclasses.dataclass
class Outcome:
    """What a trial's run says to its study: its objective (``suite.tune.objective``; None when
    pruned), whether it diverged, and the values the pruner was given."""

    pruned: bool
    diverged: bool
    diverged_step: int
    value: float | None
    reports: list[tuple[int, float]]  # (step, intermediate value) the pruner was given

    @classmethod
    def of_result(cls, spec: RunSpec, n_train: int, result: RunResult) -> Outcome:
        value = None if result.pruned else trial_value(spec, n_train, result)
        return cls(result.pruned, result.diverged, result.steps, value, [])

    @classmethod
    def of_rows(cls, spec: RunSpec, n_train: int, store: RunStore, rid: str) -> Outcome:
        """The outcome of a stored trial, read back from its rows (nothing is trained)."""
        rows = store.read(rid).sort_values("step")
        last = rows.iloc[-1]
        result = RunResult(rows=rows.to_dict("records"), diverged=bool(last["diverged"]), steps=int(last["step"]),
                           train_seconds=float(last["time_s"]), impl=str(last["optimizer_impl"]),
                           pruned=bool(last["pruned"]), steps_to_target=float(last["steps_to_target"]))
        outcome = cls.of_result(spec, n_train, result)
        outcome.reports = reports_of(spec, result.rows[1:])
        return outcome


def reports_of(spec: RunSpec, rows: list[dict]) -> list[tuple[int, float]]:
    """The (step, value) pairs a pruner is given for these evaluation rows (finite ones)."""
    values = [(int(row["step"]), intermediate(spec, row)) for row in rows]
    return [(step, v) for step, v in values if math.isfinite(v)]


def _tell(cell: CellTuning, c: Claimed, o: Outcome) -> None:
    """Tell a stored trial's outcome (a told trial always has its rows)."""
    for step, val in o.reports:  # read back from the stored rows: what the pruner saw
        c.trial.report(val, step)
    c.trial.set_user_attr("run_id", c.run_id)
    if o.pruned:
        told = cell.study.tell(c.trial, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        if o.diverged:
            c.trial.set_user_attr("diverged", True)
            c.trial.set_user_attr("diverged_step", o.diverged_step)
        told = cell.study.tell(c.trial, o.value, skip_if_finished=True)
    if told.state == TrialState.FAIL:
        raise StoreError(
            f"trial {c.trial.number} of {cell.name} was marked FAIL by another worker while this one trained it "
            f"(tune.stale_after_s too small, or two hosts share a hostname); its rows are stored as run "
            f"{c.run_id}. Raise tune.stale_after_s and re-run to continue the study."
        )
    cell.ran += 1


def _train(cell: CellTuning, batch: list[Claimed], stored: list[bool]) -> dict[int, Outcome]:
    """Train the batch's unstored trials; the whole batch when it trains as one stack, so each value
    is the one an uninterrupted run gets (a stack of another size rounds differently)."""
    task = cell.base.task
    specs = [c.spec for c in batch]
    todo = list(range(len(batch))) if stacking_pays(task, specs) else [i for i, s in enumerate(stored) if not s]

    def on_eval(k: int, row: dict) -> bool:
        reported = reports_of(specs[todo[k]], [row])
        if not reported:
            return False
        trial = batch[todo[k]].trial
        trial.report(reported[0][1], reported[0][0])
        return trial.should_prune()

    results = train_many(task, [specs[i] for i in todo], on_eval=on_eval)
    for i, result in zip(todo, results):
        if not stored[i]:
            tags = {"study": cell.name, "trial": batch[i].slot}
            store_run(cell.store, batch[i].spec, task, batch[i].config, result, tags=tags)
    return {i: Outcome.of_result(specs[i], task.n_train, r) for i, r in zip(todo, results)}


def run_batch(cell: CellTuning, batch: list[Claimed]) -> None:
    """Train (or read back) the batch, store every run, then tell every trial."""
    told: set[int] = set()
    try:
        stored = [cell.store.has(c.run_id) for c in batch]
        fresh = _train(cell, batch, stored) if not all(stored) else {}
        for i, c in enumerate(batch):
            n = cell.base.task.n_train
            _tell(cell, c, fresh.get(i) or Outcome.of_rows(c.spec, n, cell.store, c.run_id))
            told.add(c.trial.number)
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
    same = got is not None and t.value is not None and math.isclose(got, t.value, rel_tol=AGREE_RTOL)
    agrees = "agrees with" if same else f"is {got!r}, which differs from"
    echo(f"{cell.name}: trial {t.number} (slot {slot_of(t)}) had no stored run; retrained it as run "
         f"{t.user_attrs['run_id']}: its value {agrees} the {t.value!r} the study keeps.")


def redo_lost_runs(cell: CellTuning, echo: Callable[[str], object]) -> int:
    """Retrain the finished trials whose run file is missing (each with its parameters, under its run
    id), so the store and the study agree again; a damaged file is an error that says so."""
    lost = []
    for t in cell.study.get_trials(deepcopy=False, states=FINISHED):
        rid = t.user_attrs.get("run_id")
        if rid is None or cell.store.has(rid):
            continue
        spec, config = trial_run(cell, t.params, slot_of(t))
        if run_id(config) != rid:  # recorded by another version of the suite: its identity cannot be rebuilt
            echo(f"{cell.name}: trial {t.number} has no stored run {rid} and cannot be rebuilt under that id; "
                 f"its study value {t.value!r} stays, without rows.")
            continue
        lost.append((t, spec, config))
    if not lost:
        return 0
    stops = [max(t.intermediate_values) if t.state == TrialState.PRUNED and t.intermediate_values else None
             for t, _, _ in lost]
    results = train_many(cell.base.task, [spec for _, spec, _ in lost],
                         on_eval=lambda k, row: stops[k] is not None and row["step"] >= stops[k])
    for (t, spec, config), result in zip(lost, results):
        tags = {"study": cell.name, "trial": slot_of(t)}
        store_run(cell.store, spec, cell.base.task, config, result, tags=tags)
        outcome = Outcome.of_result(spec, cell.base.task.n_train, result)
        outcome.reports = reports_of(spec, result.rows)
        _check_agrees(cell, t, outcome, echo)
    return len(lost)

"""Trials as runs: a claimed batch trained (or found stored), stored, then told; lost run files redone.

A trial is an ordinary run of the suite tagged ``study`` (the cell) and ``trial`` (its slot, see
``suite.tune.claims``); the tags are part of its identity, so a trial never shares a run id with a
plain run, and a trial redone after an interrupt (same slot, same parameters) *is* the same run.

With ``tune.seeds`` a trial trains once per seed (all in the batch's stack where stacking pays)
and scores the mean of its runs' values (a noisy objective otherwise rewards a lucky seed); its
runs are ``run_ids``, the first also ``run_id``.

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
    """A claimed trial with its slot, and its runs (one per tuning seed): specs and identities."""

    trial: optuna.Trial
    slot: int
    specs: list[RunSpec]
    configs: list[dict[str, Any]]

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
    tags = {"study": cell.name, "trial": slot}
    return specs, [{**run_config(s, cell.base.config["task_options"]), **tags} for s in specs]


def run_ids_of(t: FrozenTrial) -> list[str]:
    return list(t.user_attrs.get("run_ids") or [t.user_attrs["run_id"]])


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
    def of_results(cls, specs: list[RunSpec], n_train: int, results: list[RunResult]) -> Outcome:
        """A trial's outcome from its runs (one per tuning seed): the mean of their values; pruned
        when its first run (the one the pruner follows) was; diverged when any run did."""
        outcomes = [cls.of_result(s, n_train, r) for s, r in zip(specs, results)]
        first = outcomes[0]
        value = None if first.pruned else sum(o.value for o in outcomes if o.value is not None) / len(outcomes)
        diverged = [o for o in outcomes if o.diverged]
        return cls(first.pruned, bool(diverged), diverged[0].diverged_step if diverged else first.diverged_step,
                   value, [])

    @classmethod
    def of_rows(cls, specs: list[RunSpec], n_train: int, store: RunStore, rids: list[str]) -> Outcome:
        """The outcome of a stored trial, read back from its runs' rows (nothing is trained)."""
        results = [_stored_result(store, rid) for rid in rids]
        outcome = cls.of_results(specs, n_train, results)
        outcome.reports = reports_of(specs[0], results[0].rows[1:])
        return outcome


def _stored_result(store: RunStore, rid: str) -> RunResult:
    rows = store.read(rid).sort_values("step")
    last = rows.iloc[-1]
    return RunResult(rows=rows.to_dict("records"), diverged=bool(last["diverged"]), steps=int(last["step"]),
                     train_seconds=float(last["time_s"]), impl=str(last["optimizer_impl"]),
                     pruned=bool(last["pruned"]), steps_to_target=float(last["steps_to_target"]))


def reports_of(spec: RunSpec, rows: list[dict]) -> list[tuple[int, float]]:
    """The (step, value) pairs a pruner is given for these evaluation rows (finite ones)."""
    values = [(int(row["step"]), intermediate(spec, row)) for row in rows]
    return [(step, v) for step, v in values if math.isfinite(v)]


def _tell(cell: CellTuning, c: Claimed, o: Outcome) -> None:
    """Tell a stored trial's outcome (a told trial always has its rows)."""
    for step, val in o.reports:  # read back from the stored rows: what the pruner saw
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
        told = cell.study.tell(c.trial, o.value, skip_if_finished=True)
    if told.state == TrialState.FAIL:
        raise StoreError(
            f"trial {c.trial.number} of {cell.name} was marked FAIL by another worker while this one trained it "
            f"(tune.stale_after_s too small, or two hosts share a hostname); its rows are stored as run(s) "
            f"{', '.join(c.run_ids)}. Raise tune.stale_after_s and re-run to continue the study."
        )
    cell.ran += 1


def _train(cell: CellTuning, batch: list[Claimed], stored: list[list[bool]]) -> dict[int, Outcome]:
    """Train the batch's unstored runs; the whole batch when it trains as one stack, so each value
    is the one an uninterrupted run gets (a stack of another size rounds differently)."""
    task = cell.base.task
    runs = [(i, j) for i, c in enumerate(batch) for j in range(len(c.specs))]  # (trial, seed) pairs
    specs = [batch[i].specs[j] for i, j in runs]
    todo = list(range(len(runs))) if stacking_pays(task, specs) else [
        k for k, (i, j) in enumerate(runs) if not stored[i][j]]

    def on_eval(k: int, row: dict) -> bool:
        i, j = runs[todo[k]]
        reported = reports_of(specs[todo[k]], [row]) if j == 0 else []  # the pruner follows the first seed
        if not reported:
            return False
        trial = batch[i].trial
        trial.report(reported[0][1], reported[0][0])
        return trial.should_prune()

    results = dict(zip(todo, train_many(task, [specs[k] for k in todo], on_eval=on_eval)))
    for k, result in results.items():
        i, j = runs[k]
        if not stored[i][j]:
            tags = {"study": cell.name, "trial": batch[i].slot}
            store_run(cell.store, batch[i].specs[j], task, batch[i].configs[j], result, tags=tags)
    out = {}
    for i, c in enumerate(batch):
        ks = [k for k, (ti, _) in enumerate(runs) if ti == i]
        if all(k in results for k in ks):
            out[i] = Outcome.of_results(c.specs, task.n_train, [results[k] for k in ks])
    return out


def run_batch(cell: CellTuning, batch: list[Claimed]) -> None:
    """Train (or read back) the batch, store every run, then tell every trial."""
    told: set[int] = set()
    try:
        stored = [[cell.store.has(rid) for rid in c.run_ids] for c in batch]
        fresh = _train(cell, batch, stored) if not all(all(s) for s in stored) else {}
        for i, c in enumerate(batch):
            n = cell.base.task.n_train
            _tell(cell, c, fresh.get(i) or Outcome.of_rows(c.specs, n, cell.store, c.run_ids))
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
    """Retrain the finished trials' runs whose file is missing (each with its parameters, under its
    run id), so the store and the study agree again; a damaged file is an error that says so."""
    lost = []
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
        lost.append((t, specs, configs, missing))
    if not lost:
        return 0
    for t, specs, configs, missing in lost:
        stop = max(t.intermediate_values) if t.state == TrialState.PRUNED and t.intermediate_values else None
        results = train_many(cell.base.task, specs,
                             on_eval=lambda k, row: stop is not None and k == 0 and row["step"] >= stop)
        for k in missing:
            tags = {"study": cell.name, "trial": slot_of(t)}
            store_run(cell.store, specs[k], cell.base.task, configs[k], results[k], tags=tags)
        outcome = Outcome.of_results(specs, cell.base.task.n_train, results)
        outcome.reports = reports_of(specs[0], results[0].rows)
        _check_agrees(cell, t, outcome, echo)
    return len(lost)

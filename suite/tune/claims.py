"""How several workers share one study and stop at exactly ``n_trials`` finished trials, and how a
trial lost to a crash, a kill or a full disk is redone exactly.

Each worker asks for a trial first and checks its claim after: the storage numbers trials
atomically (Optuna's journal appends under a file lock; its RDB storage locks the study row
while numbering), so every worker sees the same order. A trial is a valid claim when fewer than
``n_trials`` live trials are numbered before it; otherwise other workers took the last slots
between this worker's count and its ask, and the trial is closed at once as FAIL with
``surplus=True``, never trained. Live = complete, pruned, running or waiting (queued).

Every claimed trial holds a **slot** (user attribute ``slot``): its place in the study, 0, 1, 2,
... in a run without accidents, equal to its number. The slot seeds the sampler for the trial and
tags its stored run (``trial`` column), so it is what makes a trial *the same trial* again.

A worker that dies mid-trial would hold its slot forever, so before claiming, RUNNING trials of
dead processes on this host (and, with ``tune.stale_after_s``, of any worker) are failed. A trial
lost that way (or to Ctrl-C, a full disk, a torn journal record) is **queued again** with its
parameters and its slot (``retry_of``): the next ask of any worker pops it (Optuna serves queued
trials first), so the study evaluates the same point in the same slot and a rerun reproduces the
uninterrupted one. Queued retries are claimable work, never "running elsewhere".

Every claimed trial also records its **stack** (user attribute ``stack``): the slots of the trials
it is first trained with, in stack order. A stacked step rounds differently with other company,
so whatever retrains a trial (a retry, a lost run file) trains it in that stack again, and a
retry keeps it. The pruner never compares a trial with the trials of its own stack
(:class:`StackBlindPruner`): in an uninterrupted run none of them is finished while it trains, so
a retried stack split between two workers must not see its own first half finished either.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from suite.store.locks import alive, worker_id  # noqa: F401  (worker_id: re-exported for the tuner)

LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STACK = "stack"  # user attribute: the slots a trial is trained with (its own included), in stack order


def slot_of(trial: FrozenTrial) -> int:
    """A trial's slot (trials from before slots existed: their number)."""
    return int(trial.user_attrs.get("slot", trial.number))


def _new_slot(live_before: list[FrozenTrial]) -> int:
    # After the live trials' slots; a slot lost for good (a trial that crashed) is not reused.
    return max(len(live_before), 1 + max((slot_of(t) for t in live_before), default=-1))


def claimable(trials: list[FrozenTrial], n_trials: int) -> int:
    """Trials a worker may claim now: the queued ones, plus the slots no live trial holds."""
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return waiting + max(n_trials - sum(t.state in LIVE for t in trials), 0)


def next_slot(trials: list[FrozenTrial], n_trials: int) -> int | None:
    """The slot the next ask will take (queued trials are served first), or None if none is free."""
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    if waiting:
        return slot_of(min(waiting, key=lambda t: t.number))
    if not claimable(trials, n_trials):
        return None
    return _new_slot([t for t in trials if t.state in LIVE])


def held_elsewhere(trials: list[FrozenTrial], worker: str) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("worker") != worker]


def fail_abandoned(study: optuna.Study, stale_after_s: float | None, echo: Callable[[str], object],
                   me: str | None = None) -> int:
    """Mark FAIL the RUNNING trials whose worker is gone (or older than ``stale_after_s``) and queue
    them again with their parameters and slot. ``me``: this worker, which holds no trial between
    batches (one still marked running was left by a call that failed, e.g. on a full disk)."""
    now, failed = datetime.now(), 0  # Optuna stores naive local start times
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        dead = worker is not None and (worker == me or not alive(worker))
        stale = stale_after_s is not None and t.datetime_start is not None and \
            (now - t.datetime_start).total_seconds() > stale_after_s
        if dead or stale:
            release(study, t, retry=True)
            failed += 1
            echo(f"trial {t.number} was left running by {t.user_attrs.get('worker', 'an unknown worker')}"
                 f" ({'process gone' if dead else 'stale'}); marked FAIL and queued again with its parameters.")
    return failed


def release(study: optuna.Study, trial: FrozenTrial | optuna.Trial, retry: bool) -> None:
    """Close a claimed trial that will not finish as FAIL; with ``retry``, queue its parameters and
    slot (the next ask of any worker takes them) so the study still evaluates that point there."""
    number, params = trial.number, dict(trial.params)
    slot = trial.user_attrs.get("slot")
    frozen = study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    if not retry or frozen.state != TrialState.FAIL or trial.user_attrs.get("surplus"):
        return
    if any(t.user_attrs.get("retry_of") == number for t in study.get_trials(deepcopy=False)):
        return  # another worker queued it already
    attrs: dict[str, Any] = {"retry_of": number}
    if slot is not None:
        attrs["slot"] = slot
    if STACK in trial.user_attrs:
        attrs[STACK] = trial.user_attrs[STACK]
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)


def claim(study: optuna.Study, n_trials: int, worker: str) -> optuna.Trial | None:
    """A trial (queued or new) that holds one of the ``n_trials`` slots, or ``None`` (surplus, closed
    as FAIL). Its slot is in ``trial.user_attrs["slot"]``."""
    trial = study.ask()
    live_before = [t for t in study.get_trials(deepcopy=False, states=LIVE) if t.number < trial.number]
    if len(live_before) >= n_trials:
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=TrialState.FAIL)
        return None
    if "slot" not in trial.user_attrs:
        trial.set_user_attr("slot", _new_slot(live_before))
    trial.set_user_attr("worker", worker)
    return trial


def record_stacks(trials: Sequence[optuna.Trial], slots: Sequence[int]) -> list[list[int]]:
    """The stack of each of a batch's claimed ``trials`` (holding ``slots``): the one recorded on it
    (a retry keeps the stack it was first trained in), else this batch's trials without one,
    recorded now, before anything is trained."""
    fresh = [slot for trial, slot in zip(trials, slots) if STACK not in trial.user_attrs]
    stacks = []
    for trial in trials:
        recorded = trial.user_attrs.get(STACK)
        if recorded is None:
            trial.set_user_attr(STACK, fresh)
        stacks.append(list(fresh if recorded is None else recorded))
    return stacks


def params_of_slot(study: optuna.Study, slot: int) -> dict[str, Any] | None:
    """The parameters of the latest trial holding ``slot`` (finished, running or queued), or None."""
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number, reverse=True):
        if slot_of(t) == slot and not t.user_attrs.get("surplus"):
            params = t.params or t.system_attrs.get("fixed_params")
            if params:
                return dict(params)
    return None


class StackBlindPruner(optuna.pruners.BasePruner):
    """``inner``, deciding for a trial as if the other trials of its stack were not in the study."""

    def __init__(self, inner: optuna.pruners.BasePruner):
        self.inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        stack = trial.user_attrs.get(STACK)
        return self.inner.prune(study if stack is None else _StudyWithout(study, stack), trial)


class _StudyWithout:
    """A view of ``study`` whose ``get_trials`` leaves out the trials of ``stack``."""

    def __init__(self, study: optuna.Study, stack: list[int]):
        self._study, self._stack = study, list(stack)

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if t.user_attrs.get(STACK) != self._stack]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

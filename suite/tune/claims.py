"""How several workers share one study and stop at exactly ``n_trials`` finished trials.

Each worker asks for a trial first and checks its claim after: the storage numbers trials
atomically (Optuna's journal appends under a file lock; its RDB storage locks the study row
while numbering), so every worker sees the same order. A trial is a valid claim when fewer than
``n_trials`` live trials are numbered before it; otherwise other workers took the last slots
between this worker's count and its ask, and the trial is closed at once as FAIL with
``surplus=True``, never trained. Live = complete, pruned, running or waiting.

A worker that dies mid-trial would hold its slot forever, so before claiming, RUNNING trials of
dead processes on this host (and, with ``tune.stale_after_s``, of any worker) are failed, which
frees their slots. Workers identify themselves as ``host:pid`` in a trial user attribute. A trial
lost that way (or to Ctrl-C) is retried with the same hyperparameters (``retry_of``), so a crash
neither changes which points a seeded study evaluates nor leaves a hole in a grid.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from suite.store.locks import alive, worker_id  # noqa: F401  (worker_id: re-exported for the tuner)

LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def fail_abandoned(study: optuna.Study, stale_after_s: float | None, echo: Callable[[str], object]) -> int:
    """Mark FAIL the RUNNING trials whose worker is gone (or older than ``stale_after_s``)."""
    now, failed = datetime.now(), 0  # Optuna stores naive local start times
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        dead = "worker" in t.user_attrs and not alive(t.user_attrs["worker"])
        stale = stale_after_s is not None and t.datetime_start is not None and \
            (now - t.datetime_start).total_seconds() > stale_after_s
        if dead or stale:
            release(study, t.number, t.params, retry=True)
            failed += 1
            echo(f"trial {t.number} was left running by {t.user_attrs.get('worker', 'an unknown worker')}"
                 f" ({'process gone' if dead else 'stale'}); marked FAIL, its slot is free again.")
    return failed


def release(study: optuna.Study, number: int, params: dict[str, Any], retry: bool) -> None:
    """Close a claimed trial that will not finish as FAIL; with ``retry``, queue its parameters
    (the next ask of any worker takes them) so the study still evaluates that point."""
    frozen = study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    if retry and params and frozen.state == TrialState.FAIL:
        study.enqueue_trial(params, user_attrs={"retry_of": number})


def open_slots(study: optuna.Study, n_trials: int) -> int:
    return max(n_trials - len(study.get_trials(deepcopy=False, states=LIVE)), 0)


def claim(study: optuna.Study, n_trials: int, worker: str) -> optuna.Trial | None:
    """A new trial that holds one of the ``n_trials`` slots, or ``None`` (surplus, closed as FAIL)."""
    trial = study.ask()
    ahead = sum(t.number < trial.number for t in study.get_trials(deepcopy=False, states=LIVE))
    if ahead >= n_trials:
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=TrialState.FAIL)
        return None
    trial.set_user_attr("worker", worker)
    return trial

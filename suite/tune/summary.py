"""What a cell's study holds, in one place: trial counts by state, the best trial, the exported
summary, the progress bar and the one-screen report.

The **resolution** a study exports says how well its optimum is pinned down: of the usable
trials (complete, no seed diverged), those whose value lies within ``TOLERANCE`` (10%) of the
best value, on the objective's scale (steps to the target, or the final validation loss); their
lr interval ``[lr_lo, lr_hi]``; ``n_within``, how many trials other than the best lie within
the tolerance; and ``resolved``: at least ``MIN_WITHIN`` of them (an optimum measured by one trial
alone is not resolved).
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Mapping

import optuna
from optuna.trial import TrialState

from suite.store.identity import cell_identity
from suite.tune.claims import slot_of
from suite.tune.objective import objective_name
from suite.tune.space import TuneSpec, values_of
from suite.tune.storage import mask_url
from suite.tune.trials import CellTuning, run_ids_of

# Where a cell's lr comes from when it is not simply its best trial's (lr_source in tuned/<cell>.json).
FALLBACK = "registry default (no tuning trial finished without diverging)"
UNREACHED = "tuned (no trial reached the target)"
TOLERANCE = 0.1  # a trial within 10% of the best value counts toward the resolution
MIN_WITHIN = 2  # other trials within the tolerance for an optimum to count as resolved


def counts(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """Trials by state; ``n_queued``: failed trials queued again, waiting for a worker; ``n_redone``:
    failed trials whose retry finished (a kill or a full disk cost them nothing but time)."""
    by = {s: sum(t.state == s for t in trials) for s in TrialState}
    surplus = sum(bool(t.user_attrs.get("surplus")) for t in trials)
    redone = {t.user_attrs.get("retry_of") for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    return {
        "n_redone": sum(t.state == TrialState.FAIL and t.number in redone for t in trials),
        "n_finished": by[TrialState.COMPLETE] + by[TrialState.PRUNED], "n_complete": by[TrialState.COMPLETE],
        "n_pruned": by[TrialState.PRUNED], "n_diverged": sum(bool(t.user_attrs.get("diverged")) for t in trials),
        "n_running": by[TrialState.RUNNING], "n_queued": by[TrialState.WAITING],
        "n_failed": by[TrialState.FAIL] - surplus, "n_surplus": surplus,
    }


def usable(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The complete trials none of whose seeds diverged (the ones a cell may choose)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("diverged") and "lr" in t.params]


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The robust choice: of the complete, non-diverged trials, the one of least value (its objective:
    ``suite.tune.objective``), a trial with a collapsed seed ranking behind every trial whose seeds
    all finished (the edge of stability is not an optimum)."""
    ok = usable(trials)
    return min(ok, key=lambda t: (bool(t.user_attrs.get("collapsed")), t.value, t.number)) if ok else None


def resolution(trials: list[optuna.trial.FrozenTrial], tspec: TuneSpec) -> dict[str, Any]:
    """How well the study resolves its optimum (see the module note); no bounds without a usable trial."""
    best = best_trial(trials)
    if best is None:
        return {"tolerance": TOLERANCE, "lr_lo": None, "lr_hi": None, "n_within": 0, "resolved": False}
    bound = best.value + TOLERANCE * abs(best.value)
    within = [values_of(t.params, tspec)[0] for t in usable(trials) if t.value <= bound]
    n_within = len(within) - 1
    return {"tolerance": TOLERANCE, "lr_lo": min(within), "lr_hi": max(within), "n_within": n_within,
            "resolved": n_within >= MIN_WITHIN}


def reached_target(cell: CellTuning, trial: optuna.trial.FrozenTrial) -> bool | None:
    """Whether every run of ``trial`` (one per tuning seed) reached the cell's target, read from its
    stored rows (None: the cell has no target, or the rows are gone)."""
    if cell.base.spec.target is None:
        return None
    rids = run_ids_of(trial)
    if not all(cell.store.path(rid).exists() for rid in rids):
        return None
    last = [cell.store.read(rid).sort_values("step").iloc[-1] for rid in rids]
    return all(not row["diverged"] and math.isfinite(row["steps_to_target"]) for row in last)


def lr_source(cell: CellTuning, best: optuna.trial.FrozenTrial | None) -> str:
    """``tuned``; or why the cell's lr is not a tuned optimum: no trial finished without diverging,
    or the best trial (the one closest to the target) did not reach it."""
    if best is None:
        return FALLBACK
    return UNREACHED if reached_target(cell, best) is False else "tuned"


def summarize(cell: CellTuning) -> dict[str, Any]:
    """The study's state and best configuration (lr and hyperparameters as the trial trained them)."""
    trials = cell.study.get_trials(deepcopy=False)
    best = best_trial(trials)
    lr, searched = (None, {}) if best is None else values_of(best.params, cell.tspec)
    source = lr_source(cell, best)
    return {
        "cell": cell.name, "lr": lr, "hparams": searched,
        "params": None if best is None else best.params, "value": None if best is None else best.value,
        "trial": None if best is None else best.number, "slot": None if best is None else slot_of(best),
        "run_id": None if best is None else best.user_attrs.get("run_id"), "objective": objective_name(cell.base.spec),
        "n_trials": cell.tspec.n_trials, **counts(trials), "n_run_here": cell.ran,
        "sampler": cell.tspec.sampler_record(), "pruner": cell.tspec.pruner, "lr_range": list(cell.tspec.lr_range),
        "lr_range_initial": list(cell.initial_range or cell.tspec.lr_range), "widenings": cell.widenings,
        "edge": cell.edge, "lr_source": source, "retune": cell.tspec.retune,
        "resolution": resolution(trials, cell.tspec), "n_refined": sum(bool(t.user_attrs.get("refines")) for t in trials),
        "n_resolving": sum(bool(t.user_attrs.get("resolves")) for t in trials),
        **({"target_reached": source != UNREACHED} if cell.base.spec.target is not None and best else {}),
        "ranges": {k: list(v) for k, v in cell.tspec.ranges.items()}, "storage": mask_url(cell.url),
        "cell_config": cell_identity(cell.base.spec, cell.base.config["task_options"], cell.tspec.searched),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def progress(cell: CellTuning, bar) -> None:
    trials = cell.study.get_trials(deepcopy=False)
    c, best = counts(trials), best_trial(trials)
    bar.n = min(c["n_finished"], bar.total)
    bar.set_postfix(best=f"{best.value:.4g}" if best else "-", pruned=c["n_pruned"], diverged=c["n_diverged"],
                    refresh=False)
    bar.refresh()


def report(s: Mapping[str, Any]) -> str:
    """One screen: what the study holds and its best configuration."""
    lines = [
        f"study {s['cell']}  sampler={s['sampler']['sampler']} seed={s['sampler']['seed']} pruner={s['pruner']}  "
        f"storage {s['storage']}",
        f"  trials: {s['n_finished']}/{s['n_trials']} finished ({s['n_complete']} complete, {s['n_pruned']} pruned), "
        f"{s['n_diverged']} diverged (penalized), {s['n_failed']} failed"
        + (f" ({s['n_redone']} of them redone)" if s.get("n_redone") else "")
        + f", {s['n_queued']} queued for a retry, "
        f"{s['n_running']} running elsewhere; "
        f"{s['n_run_here']} trained by this worker"
        + (f"; {s['n_surplus']} surplus claims released untrained" if s["n_surplus"] else ""),
    ]
    if s["lr"] is None:
        lines.append("  no usable trial yet (none complete without diverging); try a smaller tune.lr_range.")
        return "\n".join(lines)
    extra = "".join(f"  {k}={v:.6g}" for k, v in s["hparams"].items())
    slot = f" (slot {s['slot']})" if s.get("slot") not in (None, s["trial"]) else ""
    lines += [f"  best: trial {s['trial']}{slot}  lr={s['lr']:.6g}{extra}  value {s['value']:.6g}  "
              f"(run {s['run_id']}; objective: {s['objective']})",
              *([f"  no trial reached the target: lr_source '{UNREACHED}' (the trial closest to it)"]
                if s.get("lr_source") == UNREACHED else []),
              f"  lr range {s['lr_range']}" + (f" (widened {s['widenings']}x from {s['lr_range_initial']})"
                                                if s.get("widenings") else "")
              + (f"; at an edge: {s['edge']}" if s.get("edge") else ""),
              f"  exported: {s['path']}  (suite-train lr=tuned reads it)"]
    return "\n".join(lines)

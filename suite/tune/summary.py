"""What a cell's study holds, in one place: trial counts by state, the best trial, the exported
summary, the progress bar and the one-screen report."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Mapping

import optuna
from optuna.trial import TrialState

from suite.store.identity import cell_identity
from suite.tune.claims import slot_of
from suite.tune.objective import objective_name
from suite.tune.space import values_of
from suite.tune.storage import mask_url
from suite.tune.trials import CellTuning, run_ids_of

# Where a cell's lr comes from when it is not simply its best trial's (lr_source in tuned/<cell>.json).
FALLBACK = "registry default (no tuning trial finished without diverging)"
UNREACHED = "tuned (no trial reached the target)"


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


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The complete, non-diverged trial of least value (its objective: ``suite.tune.objective``)."""
    ok = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("diverged") and "lr" in t.params]
    return min(ok, key=lambda t: (t.value, t.number)) if ok else None


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
        "edge": cell.edge, "lr_source": source,
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

"""What a tuning trial scores (Optuna minimizes it), under the two protocols a study can name.

* ``budget`` (fixed compute, DeepOBS-style): the validation loss at the final evaluation.
* ``target`` (time-to-result, Shallue et al. 2019, AlgoPerf): the trial's steps to the cell's
  target (``RunSpec.target``, exact to 5% by replay). A trial that does not reach it within the
  step cap ranks behind every trial that does, and among those by how far its final value falls
  short of the target: ``cap + 1 + cap × shortfall``.

Either way a diverged trial scores worse than every finished one (a finite value: NaN would give
the sampler nothing), and the value the pruner sees at each evaluation is "smaller is better". A
trial with a collapsed seed (it finished without learning: :func:`suite.types.collapsed`) keeps its
value but is chosen only where no trial finished every seed (``suite.tune.summary.best_trial``).
:class:`Outcome` is what a trial's runs say to its study, from their results or their stored rows.
"""
from __future__ import annotations

import dataclasses
import math

from suite.store.runs import RunStore
from suite.train.schedule import total_steps
from suite.types import SHORTFALL_CAP, RunResult, RunSpec, collapsed, unreached_value

FALLBACK_PENALTY = 1e12  # when the initial validation loss itself is not a positive finite number


def objective_name(spec: RunSpec) -> str:
    if spec.target is None:
        return "val_loss at the final evaluation (minimized)"
    return (f"steps to {spec.target.describe()} (minimized; a trial that does not reach it ranks behind every "
            f"one that does, by its final shortfall)")


def diverged_penalty(initial_val_loss: float, divergence_factor: float) -> float:
    """Budget protocol: a diverged trial scores as if its loss had reached the divergence limit."""
    ok = math.isfinite(initial_val_loss) and initial_val_loss > 0
    return divergence_factor * initial_val_loss if ok else FALLBACK_PENALTY


def shortfall(spec: RunSpec, result: RunResult) -> float:
    """How far the last evaluation falls short of the target, relative to the threshold (0 if met)."""
    metric = spec.target.metric
    return spec.target.shortfall(result.rows[0][metric], result.rows[-1][metric])


def trial_value(spec: RunSpec, n_train: int, result: RunResult) -> float:
    """The finite value a finished (not pruned) trial reports to its study."""
    if spec.target is None:
        final = result.rows[-1]["val_loss"]
        if result.diverged or not math.isfinite(final):
            return diverged_penalty(result.rows[0]["val_loss"], spec.divergence_factor)
        return final
    if not result.diverged and math.isfinite(result.steps_to_target):
        return result.steps_to_target
    missed = SHORTFALL_CAP + 1 if result.diverged else shortfall(spec, result)
    return unreached_value(total_steps(spec, n_train), missed)


def run_collapsed(result: RunResult) -> bool:
    """A run that finished (neither diverged nor pruned) without learning."""
    if result.diverged or result.pruned:
        return False
    first, last = result.rows[0], result.rows[-1]
    return collapsed(first["val_loss"], last["val_loss"], first.get("val_accuracy", math.nan),
                     last.get("val_accuracy", math.nan))


def intermediate(spec: RunSpec, row: dict) -> float:
    """What the pruner compares at an evaluation: smaller is better, NaN when not measured."""
    if spec.target is None:
        return row["val_loss"]
    value = row[spec.target.metric]
    return -value if spec.target.maximize else value


@dataclasses.dataclass
class Outcome:
    """What a trial's runs say to its study: its objective (:func:`trial_value`; None when pruned),
    whether it diverged, the values the pruner was given, and whether a run collapsed."""

    pruned: bool
    diverged: bool
    diverged_step: int
    value: float | None
    reports: list[tuple[int, float]]  # (step, intermediate value) the pruner was given
    collapsed: bool = False  # a run finished without learning (:func:`run_collapsed`)

    @classmethod
    def of_result(cls, spec: RunSpec, n_train: int, result: RunResult) -> Outcome:
        value = None if result.pruned else trial_value(spec, n_train, result)
        return cls(result.pruned, result.diverged, result.steps, value, [], run_collapsed(result))

    @classmethod
    def of_results(cls, specs: list[RunSpec], n_train: int, results: list[RunResult]) -> Outcome:
        """A trial's outcome from its runs (one per tuning seed): the mean of their values; pruned
        when its first run (the one the pruner follows) was; diverged when any run did."""
        outcomes = [cls.of_result(s, n_train, r) for s, r in zip(specs, results)]
        first = outcomes[0]
        value = None if first.pruned else sum(o.value for o in outcomes if o.value is not None) / len(outcomes)
        diverged = [o for o in outcomes if o.diverged]
        return cls(first.pruned, bool(diverged), diverged[0].diverged_step if diverged else first.diverged_step,
                   value, [], any(o.collapsed for o in outcomes))

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

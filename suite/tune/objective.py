"""What a tuning trial scores (Optuna minimizes it), under the two protocols a study can name.

* ``budget`` (fixed compute, DeepOBS-style): the validation loss at the final evaluation.
* ``target`` (time-to-result, Shallue et al. 2019, AlgoPerf): the trial's steps to the cell's
  target (``RunSpec.target``, exact to 5% by replay). A trial that does not reach it within the
  step cap ranks behind every trial that does, and among those by how far its final value falls
  short of the target: ``cap + 1 + cap × shortfall``.

Either way a diverged trial scores worse than every finished one (a finite value: NaN would give
the sampler nothing), and the value the pruner sees at each evaluation is "smaller is better".
"""
from __future__ import annotations

import math

from suite.train.schedule import total_steps
from suite.types import SHORTFALL_CAP, RunResult, RunSpec, unreached_value

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


def intermediate(spec: RunSpec, row: dict) -> float:
    """What the pruner compares at an evaluation: smaller is better, NaN when not measured."""
    if spec.target is None:
        return row["val_loss"]
    value = row[spec.target.metric]
    return -value if spec.target.maximize else value

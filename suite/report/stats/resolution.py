"""The resolution of a metric: how close to its floor a value can be told apart from it.

The excess loss (training loss minus the known optimum, on the quadratic) is a difference of two
nearly equal numbers. The training loss is a float32 mean over the training set, whose rounding
error is a few units of roundoff ε of the loss level ℓ* (a pairwise sum of n terms is exact to
about log2(n)·ε relative: 10·ε for the regression's 1,000 samples). So an excess loss with
|value| ≤ :data:`ROUNDOFF_MULTIPLE` · ε · |ℓ*| is *at the floor*: it says "converged", and two
such values are equal whatever their digits. Measured on the published study's converged float32
regression runs (batch ≥ 256: ℓ* = 0.00975), the excess loss scatters over [−6.0e-7, +8.8e-7] × ℓ*,
i.e. within ±7.4 ε, inside the floor; a run still converging sits well above it.

Metrics without a known optimum (losses, accuracies) have no floor here: their differences are
tested over seeds instead.
"""
from __future__ import annotations

import math

from suite.report.stats.batch_science import FLOAT_EPS

ROUNDOFF_MULTIPLE = 10


def floor(column: str, dtype: str, optimal_loss: float) -> float:
    """The largest |value| of ``column`` that cannot be told from its floor (0: no floor)."""
    if "excess" not in column or optimal_loss is None or not math.isfinite(optimal_loss):
        return 0.0
    eps = FLOAT_EPS.get(dtype if isinstance(dtype, str) else "float32", FLOAT_EPS["float32"])
    return ROUNDOFF_MULTIPLE * eps * abs(optimal_loss)


def at_floor(value: float, limit: float) -> bool:
    return limit > 0 and math.isfinite(value) and abs(value) <= limit

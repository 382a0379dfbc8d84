"""Every step's mini-batch loss, kept compactly: exact while the run is short, log-binned after.

The loop sees each step's mini-batch loss anyway (divergence check); appending it to an array
costs nothing measurable. At the end the steps are grouped into at most :data:`MAX_BINS` bins
whose width grows with the step (bins of one step while there are fewer steps than bins), each
with the count, mean, min and max of its losses: enough to draw every step of a short run and the
spread of a long one (tutorial 000's figure: mini-batch loss at every step beside the full
training-set loss), at a few kB per run.
"""
from __future__ import annotations

from array import array

import numpy as np

MAX_BINS = 512


def bin_trace(losses: array, max_bins: int = MAX_BINS) -> dict[str, list]:
    """``losses[i]`` is the mini-batch loss of step ``i + 1``; returns the bins as columns."""
    n = len(losses)
    if n == 0:
        return {"step_lo": [], "step_hi": [], "count": [], "mean": [], "min": [], "max": []}
    values = np.frombuffer(losses, dtype=np.float64) if isinstance(losses, array) else np.asarray(losses, float)
    if n <= max_bins:
        edges = np.arange(n + 1)
    else:  # bin i holds steps edges[i]+1 .. edges[i+1]: widths grow geometrically, the first ones are 1
        edges = np.unique(np.round(np.geomspace(1, n + 1, max_bins + 1)).astype(int) - 1)
        edges[-1] = n
    lo, hi = edges[:-1], edges[1:]
    with np.errstate(invalid="ignore"):
        mean = np.add.reduceat(values, lo) / (hi - lo)
        low, high = np.minimum.reduceat(values, lo), np.maximum.reduceat(values, lo)
    return {"step_lo": (lo + 1).tolist(), "step_hi": hi.tolist(), "count": (hi - lo).tolist(),
            "mean": mean.tolist(), "min": low.tolist(), "max": high.tolist()}


"""Search ranges with interior optima: when a study's best lr lies within a quarter decade of a
boundary of its range, the range is widened there by a decade (the lower end always; the upper end
unless trials already diverge just above the best) and the study continues with more trials. A
study whose every trial diverged has its optimum below the range: the lower end moves down.
A range widened ``MAX_WIDENINGS`` times without the optimum moving inside is reported as an edge,
with the reason, and so is an optimum that sits at the divergence limit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from suite.tune.space import SIGNIFICANT_DIGITS

EDGE_DECADES = 0.25  # an optimum this close (in decades) to a boundary is at the edge
WIDEN_DECADES = 1.0
MAX_WIDENINGS = 2  # per study: each adds half the trial count


@dataclass(frozen=True)
class Decision:
    lr_range: tuple[float, float]  # the range to search next (the same when nothing is widened)
    widened: bool
    edge: str | None  # why the optimum still sits at an edge, or None


def decide(best_lr: float | None, lr_range: tuple[float, float], diverged_lrs: list[float],
           widenings: int) -> Decision:
    """Whether (and how) to widen ``lr_range`` around ``best_lr`` after ``widenings`` earlier widenings
    (``best_lr`` None: no trial finished without diverging)."""
    lo, hi = lr_range
    if best_lr is None:
        return _all_diverged(lr_range, diverged_lrs, widenings)
    near_lo = math.log10(best_lr / lo) < EDGE_DECADES
    near_hi = math.log10(hi / best_lr) < EDGE_DECADES
    unstable_above = any(best_lr < d <= best_lr * 10 ** EDGE_DECADES for d in diverged_lrs)
    if not (near_lo or near_hi):
        return Decision(lr_range, False, None)
    if near_hi and unstable_above and not near_lo:
        return Decision(lr_range, False, "the best lr is within a quarter decade of lrs that diverged "
                                         "(the stability limit), at the top of the range")
    if widenings >= MAX_WIDENINGS:
        side = "bottom" if near_lo else "top"
        return Decision(lr_range, False, f"the best lr stays within a quarter decade of the {side} of the range "
                                         f"after {widenings} widenings to [{lo:.3g}, {hi:.3g}]")
    new_lo = _round(lo / 10 ** WIDEN_DECADES) if near_lo else lo
    new_hi = _round(hi * 10 ** WIDEN_DECADES) if near_hi and not unstable_above else hi
    return Decision((new_lo, new_hi), True, None)


def _all_diverged(lr_range: tuple[float, float], diverged_lrs: list[float], widenings: int) -> Decision:
    lo, hi = lr_range
    if not diverged_lrs:
        return Decision(lr_range, False, None)
    if widenings >= MAX_WIDENINGS:
        return Decision(lr_range, False, f"every trial diverged, down to the bottom of the range after {widenings} "
                                         f"widenings to [{lo:.3g}, {hi:.3g}]")
    return Decision((_round(lo / 10 ** WIDEN_DECADES), hi), True, None)


def new_region_lrs(old: tuple[float, float], new: tuple[float, float], n: int) -> list[float]:
    """``n`` learning rates log-spaced over the part of ``new`` that ``old`` did not cover (both
    ends alternately when both were widened), rounded as sampled values are."""
    ends = [(old[1], new[1])] if new[1] > old[1] else []
    ends += [(old[0], new[0])] if new[0] < old[0] else []
    out = []
    for i in range(n):
        start, stop = ends[i % len(ends)]
        k, of = i // len(ends) + 1, -(-n // len(ends))
        out.append(float(f"{start * (stop / start) ** (k / of):.{SIGNIFICANT_DIGITS}g}"))
    return out


def _round(x: float) -> float:
    return float(f"{x:.12g}")  # 1e-5 / 10 is 1.0000000000000002e-06 in floats

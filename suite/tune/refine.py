"""Resolving a cell's optimum: refinement trials around the best lr (how well it is resolved is
exported by ``suite.tune.summary.resolution``).

After the search (and any widening, ``suite.tune.widening``), ``tune.refine`` more trials are
spread within a quarter decade of the best lr (at ±⅛ and ±¼ decade for four; the best trial's
other searched values kept), so the neighbourhood of the optimum is measured at the same seeds
before the cell chooses. The refinement runs once per study.
"""
from __future__ import annotations

import dataclasses

from suite.tune.claims import slot_of
from suite.tune.space import SIGNIFICANT_DIGITS, TuneSpec, values_of
from suite.tune.summary import best_trial
from suite.tune.trials import CellTuning

REFINE_DECADES = 0.25  # refinement trials lie within this many decades of the best lr


def refine_lrs(best_lr: float, lr_range: tuple[float, float], n: int) -> list[float]:
    """``n`` lrs spread evenly within ``REFINE_DECADES`` of ``best_lr`` on both sides (the nearest
    first, alternating below and above), clipped to ``lr_range``; each once, never the best itself."""
    per_side = -(-n // 2)
    offsets = [sign * REFINE_DECADES * k / per_side for k in range(1, per_side + 1) for sign in (-1, 1)][:n]
    lo, hi = lr_range
    out = []
    for offset in offsets:
        value = float(f"{min(max(best_lr * 10 ** offset, lo), hi):.{SIGNIFICANT_DIGITS}g}")
        if value != best_lr and value not in out:
            out.append(value)
    return out


def refine(cell: CellTuning) -> bool:
    """Queue the refinement trials around the best trial (True), unless the study refined already,
    asks for none, or has no usable trial (False)."""
    tspec, attrs = cell.tspec, cell.study.user_attrs
    if not tspec.refine or tspec.sampler == "grid" or attrs.get("refined"):
        return False
    trials = cell.study.get_trials(deepcopy=False)
    best = best_trial(trials)
    if best is None:
        return False
    lrs = refine_lrs(values_of(best.params, tspec)[0], tspec.lr_range, tspec.refine)
    first = tspec.n_trials
    cell.study.set_user_attr("n_trials", first + len(lrs))
    taken = {slot_of(t) for t in trials}
    for slot, value in enumerate(lrs, start=first):
        if slot not in taken:
            cell.study.enqueue_trial({**best.params, "lr": value}, user_attrs={"slot": slot, "refines": True},
                                     skip_if_exists=False)
    cell.study.set_user_attr("refined", best.number)  # last: marks the refinement queued
    cell.tspec = dataclasses.replace(tspec, n_trials=first + len(lrs))
    return True

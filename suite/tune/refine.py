"""Resolving a cell's optimum: refinement trials around the best lr, then bisection rounds until it
is resolved (how well it is resolved is exported by ``suite.tune.summary.resolution``).

After the search (and any widening, ``suite.tune.widening``), ``tune.refine`` more trials are
spread within a quarter decade of the best lr (at ±⅛ and ±¼ decade for four; the best trial's
other searched values kept), so the neighbourhood of the optimum is measured at the same seeds
before the cell chooses. The refinement runs once per study.

Then, while the optimum is not resolved, **bisection rounds** (``tune.resolve``: at most that many
trials in all): each round probes the geometric midpoints between the best lr and the nearest lr
tried below and above it (a diverged trial bounds the gap too). Steps to a target fall about as
1/lr up to the edge of stability and jump beyond it, so the optimum is a cliff, not a basin: a
trial within 10% of the best needs an lr within about 10% of it, which a quarter-decade
refinement (±33%) cannot give; halving the gaps on both sides gets there in a few rounds. Each
round is recorded in the study (its first slot, the best trial's values and the lrs) before its
trials are queued, and completed when the study is opened again, so a kill anywhere resumes to the
same trials.
"""
from __future__ import annotations

import dataclasses
import math

from suite.tune.claims import FINISHED, slot_of
from suite.tune.space import TuneSpec, canonical, values_of
from suite.tune.summary import best_trial, resolution
from suite.tune.trials import CellTuning

ROUNDS = "resolve_rounds"  # the study's user attribute holding its bisection rounds

REFINE_DECADES = 0.25  # refinement trials lie within this many decades of the best lr


def refine_lrs(best_lr: float, lr_range: tuple[float, float], n: int) -> list[float]:
    """``n`` lrs spread evenly within ``REFINE_DECADES`` of ``best_lr`` on both sides (the nearest
    first, alternating below and above), clipped to ``lr_range``; each once, never the best itself."""
    per_side = -(-n // 2)
    offsets = [sign * REFINE_DECADES * k / per_side for k in range(1, per_side + 1) for sign in (-1, 1)][:n]
    lo, hi = lr_range
    out = []
    for offset in offsets:
        value = canonical(best_lr * 10 ** offset, lo, hi)
        if value != best_lr and value not in out:
            out.append(value)
    return out


def refine(cell: CellTuning) -> bool:
    """Queue the refinement trials around the best trial (True), unless the study refined already,
    asks for none, or has no usable trial (False)."""
    tspec, attrs = cell.tspec, cell.study.user_attrs
    if not tspec.refine or tspec.sampler == "grid" or "refined" in attrs:  # its value, a trial number, may be 0
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


def bisection_lrs(best_lr: float, tried: list[float], lr_range: tuple[float, float]) -> list[float]:
    """The geometric midpoints between ``best_lr`` and the nearest lr in ``tried`` below it, then above
    it (a side with no tried lr has none), rounded like sampled values, inside ``lr_range``; an lr
    already tried (the gap closed to the rounding) is left out."""
    below = max((lr for lr in tried if lr < best_lr), default=None)
    above = min((lr for lr in tried if lr > best_lr), default=None)
    lo, hi = lr_range
    out = []
    for near in (below, above):
        if near is None:
            continue
        value = canonical(math.sqrt(near * best_lr), lo, hi)
        if value not in (best_lr, near) and value not in tried and value not in out:
            out.append(value)
    return out


def resolving_trials(attrs) -> int:
    """The trial count the study's recorded bisection rounds reach (0: none recorded)."""
    rounds = attrs.get(ROUNDS) or []
    return max((r["first"] + len(r["lrs"]) for r in rounds), default=0)


def queue_rounds(cell: CellTuning) -> None:
    """Queue every recorded round's trials not queued yet (the rest of a round a kill interrupted)."""
    rounds = cell.study.user_attrs.get(ROUNDS) or []
    if not rounds:
        return
    taken = {slot_of(t) for t in cell.study.get_trials(deepcopy=False)}
    for r in rounds:
        for slot, value in enumerate(r["lrs"], start=r["first"]):
            if slot not in taken:
                cell.study.enqueue_trial({**r["params"], "lr": value}, user_attrs={"slot": slot, "resolves": True},
                                         skip_if_exists=False)
    reached = resolving_trials(cell.study.user_attrs)
    cell.tspec = dataclasses.replace(cell.tspec, n_trials=max(cell.tspec.n_trials, reached))


def resolve(cell: CellTuning) -> bool:
    """Record and queue the next bisection round (True), unless the optimum is resolved, the study asks
    for none or has spent ``tune.resolve`` trials on them, or no gap is left to halve (False)."""
    tspec = cell.tspec
    if not tspec.resolve or tspec.sampler == "grid":
        return False
    trials = cell.study.get_trials(deepcopy=False)
    rounds = list(cell.study.user_attrs.get(ROUNDS) or [])
    spent = sum(len(r["lrs"]) for r in rounds)
    best = best_trial(trials)
    if best is None or spent >= tspec.resolve or resolution(trials, tspec)["resolved"]:
        return False
    tried = [values_of(t.params, tspec)[0] for t in trials if t.state in FINISHED and "lr" in t.params]
    lrs = bisection_lrs(values_of(best.params, tspec)[0], tried, tspec.lr_range)[: tspec.resolve - spent]
    if not lrs:
        return False
    cell.study.set_user_attr(ROUNDS, [*rounds, {"first": tspec.n_trials, "params": dict(best.params), "lrs": lrs}])
    queue_rounds(cell)
    return True

"""What tuning says about each cell: the tuner's exports (``tuned/<cell>.json``), edge-of-range,
fallback and resolution flags, and the tuning table.

A tuned optimum should be interior to its search range: the tuner widens a range whose optimum
sits within :data:`EDGE_DECADES` of a boundary and records why one still does (``edge``). Exports
written before that key existed are checked here against their recorded ``lr_range``. A cell whose
every tuning trial diverged runs at the optimizer registry's default lr (``lr_source``), and one in
which no trial reached the target at the lr of the trial closest to it (``target_reached: false``).
The tuner also exports how well it resolved the optimum (``resolution``); a cell whose export says
it did not is *unresolved*. All four (:data:`FLAGS`) are flagged wherever the cell is shown.
"""
from __future__ import annotations

import math

import pandas as pd

from suite.report.data.metrics import TUNED_CELL
from suite.report.data.tuned import RESOLUTION
from suite.report.tables.cells import UNRESOLVED_MARK
from suite.report.tables.comparison import batch_order, optimizer_order
from suite.report.tables.render import Table, fmt, plain_table

EDGE_DECADES = 0.25
RESOLVED_WITHIN = 2  # other trials within the tolerance of the best that make an optimum resolved (the tuner's rule)
FALLBACK = "registry default (every tuning trial diverged)"
TUNED_COLUMNS = ("tuned_lr", "objective", "lr_range", "lr_range_initial", "edge", "lr_source", "lr_unreached")
RESOLUTION_COLUMNS = tuple(f"resolution_{k}" for k in RESOLUTION)
FLAGS = ("edge", "lr_fallback", "lr_unreached", "unresolved")  # a cell's flags, as columns of its trials and cells


def edge_reason(lr: float, lo: float, hi: float, decades: float = EDGE_DECADES) -> str:
    """Why ``lr`` sits at an edge of [lo, hi] (within ``decades`` of a bound), or "" if interior."""
    for side, bound in (("upper", hi), ("lower", lo)):
        if abs(math.log10(bound / lr)) < decades:
            return (f"optimum lr {fmt(lr)} within {decades:g} decade of the {side} bound {fmt(bound)} of the "
                    f"search range")
    return ""


def _range_text(r) -> str:
    return f"{fmt(float(r[0]))}–{fmt(float(r[1]))}" if isinstance(r, (list, tuple)) and len(r) == 2 else ""


def _tuned_line(data: dict) -> dict:
    lr, lr_range = data.get("lr"), data.get("lr_range")
    if "edge" in data:
        edge = data["edge"] or ""
    elif lr and _range_text(lr_range):
        edge = edge_reason(float(lr), float(lr_range[0]), float(lr_range[1]))
    else:
        edge = ""
    initial = data.get("lr_range_initial")
    return {"tuned_lr": lr, "objective": data.get("objective") or "", "lr_range": _range_text(lr_range),
            "lr_range_initial": _range_text(initial) if initial != lr_range else "",
            "edge": edge, "lr_source": data.get("lr_source") or ("tuned" if lr else FALLBACK),
            "lr_unreached": data.get("target_reached") is False}


def tuned_lines(exports: pd.DataFrame) -> pd.DataFrame:
    """One line per linked export (:func:`suite.report.data.tuned.link`): its cell's key, the
    display columns (:data:`TUNED_COLUMNS`) and its resolution."""
    linked = exports[exports["optimizer"].notna()]
    lines = [{**{k: line[k] for k in TUNED_CELL}, **_tuned_line(line["data"]),
              **{c: line[c] for c in exports if c.startswith("resolution_")}} for _, line in linked.iterrows()]
    return pd.DataFrame(lines, columns=[*TUNED_CELL, *TUNED_COLUMNS, *RESOLUTION_COLUMNS])


def attach(trials: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    """The trial statistics of each cell with its export's range, ``edge``, ``lr_source`` and
    resolution (``unresolved``: the export says fewer than two other trials lie within its tolerance)."""
    if trials.empty:
        return trials
    keys = trials[list(TUNED_CELL)].dtypes.to_dict()
    out = trials.merge(tuned.astype(keys), on=list(TUNED_CELL), how="left")
    out["edge"] = out["edge"].fillna("").astype(str)
    none_finished = out["best_trial_lr"].isna() & (out["n_diverged"] > 0)
    out["lr_source"] = out["lr_source"].where(out["lr_source"].notna(), none_finished.map({True: FALLBACK,
                                                                                           False: "tuned"}))
    out["lr_fallback"] = out["lr_source"].astype(str).str.startswith("registry")
    out["lr_unreached"] = out["lr_unreached"].fillna(False).astype(bool)
    out["unresolved"] = out["resolution_resolved"].map(lambda r: r is False)
    return out


def flag_cells(cells: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """The flags (:data:`FLAGS`: ``edge`` a reason or "", the others bools) of each final cell, from
    its tuning trials."""
    if cells.empty:
        return cells
    if trials.empty:
        return cells.assign(edge="", **{f: False for f in FLAGS[1:]})
    flags = trials[[*TUNED_CELL, *FLAGS]].drop_duplicates(list(TUNED_CELL))
    out = cells.merge(flags, on=list(TUNED_CELL), how="left")
    return out.assign(edge=out["edge"].fillna(""), **{f: out[f].fillna(False).astype(bool) for f in FLAGS[1:]})


def flags(cells: pd.DataFrame, column: str) -> pd.Series:
    """A cell flag as booleans (``edge`` holds a reason or "", the others a bool); False if absent."""
    if column not in cells:
        return pd.Series(False, index=cells.index)
    return cells[column].fillna("" if column == "edge" else False).astype(bool)


def tuning_table(trials: pd.DataFrame, tolerance: float) -> Table:
    """Per cell: what its tuning trials say (long table: one line per optimizer and batch size)."""
    rank_b = {b: i for i, b in enumerate(batch_order(trials))}
    rank_o = {o: i for i, o in enumerate(optimizer_order(trials["optimizer"]))}
    t = trials.assign(_o=trials["optimizer"].map(rank_o), _b=trials["batch_label"].map(rank_b))
    t = t.sort_values(["_o", "_b"]).drop(columns=["_o", "_b"]).reset_index(drop=True)
    good = [f"{fmt(lo)}–{fmt(hi)}" if not math.isnan(lo) else "—"
            for lo, hi in zip(t["sensitivity_low_lr"], t["sensitivity_high_lr"])]
    searched = [f"{r} (from {i})" if i else (r or "—") for r, i in zip(t["lr_range"].fillna(""),
                                                                   t["lr_range_initial"].fillna(""))]
    metrics = " or ".join(sorted(set(t["sensitivity_metric"].str.replace("_", " "))))
    objectives = " or ".join(sorted(set(t.get("trial_objective", pd.Series(["final validation loss"])))))
    text = pd.DataFrame({
        "batch size": t["batch_label"], "trials": t["n_trials"].map(str), "pruned": t["n_pruned"].map(str),
        "lrs diverged": t["frac_lrs_diverged"].map(lambda x: f"{x:.0%}" if not math.isnan(x) else "—"),
        "largest stable lr": t["largest_stable_lr"].map(fmt), "best trial lr": t["best_trial_lr"].map(fmt),
        f"within {tolerance:.0%} (decades)": t["sensitivity_decades"].map(fmt), "good lr range": good,
        "search range": searched, "lr source": t["lr_source"],
        "edge of range": t["edge"].map(lambda e: f"yes: {e}" if e else "no"),
        "resolution (tuner)": [resolution_text(line) for _, line in t.iterrows()],
    })
    text.index = pd.Index(t["optimizer"], name="optimizer")
    caption = (f"Tuning trials per cell: fraction of tried lrs that diverged, the largest lr that did not, the best "
               f"trial's lr (by the tuner's objective: {objectives}, over its tuning seeds), and the width "
               f"(decades) of the contiguous lr range whose {metrics} is within {tolerance:.0%} of the best "
               f"(resolution = trial spacing; an lr that diverged or missed the target ends it); the final search "
               f"range (widened from the initial one where shown), where the lr came from, and whether the optimum "
               f"still sits within {EDGE_DECADES:g} decade of a bound; resolution, as the tuner exported it: the lr "
               f"interval of the finished trials whose objective lies within its tolerance of the best trial's, how "
               f"many other trials lie in it, and whether that resolves the optimum (at least {RESOLVED_WITHIN}; "
               f"{UNRESOLVED_MARK.strip()} otherwise, wherever the cell is shown).")
    return plain_table("tuning", caption, text, t)


def resolution_text(line) -> str:
    """``lo–hi, k within 10%: yes`` from the export's resolution; "—" where it exported none."""
    resolved = line.get("resolution_resolved")
    if resolved is None or (isinstance(resolved, float) and math.isnan(resolved)):
        return "—"
    lo, hi, k, tol = (line.get(f"resolution_{c}") for c in ("lr_lo", "lr_hi", "n_within", "tolerance"))
    span = f"{fmt(lo)}–{fmt(hi)}, " if pd.notna(lo) and pd.notna(hi) else ""
    within = f"{fmt(k, 'count')} within {tol:.0%}" if pd.notna(k) and pd.notna(tol) else ""
    return f"{span}{within}: " + ("resolved" if resolved else f"not resolved{UNRESOLVED_MARK}")


def resolution_counts(trials: pd.DataFrame) -> tuple[int, int]:
    """(resolved, with a resolution exported) among the cells of ``trials``."""
    known = trials["resolution_resolved"].map(lambda r: isinstance(r, bool))
    return int(trials.loc[known, "resolution_resolved"].map(bool).sum()), int(known.sum())


def _where(line) -> str:
    return f"{line['task_label']} / {line['part']} / {line['optimizer']} / batch {line['batch_label']}"


def flag_lines(t: pd.DataFrame) -> list[str]:
    """The README's Flags: cells (their tuning trials ``t``, with :func:`attach`'s flags) whose lr is
    not an interior tuned optimum of its search range, not tuned at all, not tuned to reach the
    target, or whose tuning did not resolve its optimum."""
    if not len(t):
        return []
    edge, fallback, unreached = (t[t[f].astype(bool)] for f in ("edge", "lr_fallback", "lr_unreached"))
    lines = [f"- **edge of range** (†): {_where(r)}: {r['edge']}" for _, r in edge.iterrows()]
    lines += [f"- **registry-default lr** (‡): {_where(r)}: {r['lr_source']}" for _, r in fallback.iterrows()]
    lines += [f"- **target not reached in tuning** (§): {_where(r)}: {r['lr_source']}; its lr is the trial closest "
              f"to the target" for _, r in unreached.iterrows()]
    for (task, part), g in t[t["unresolved"].astype(bool)].groupby(["task_label", "part"], sort=False):
        known = resolution_counts(t[(t["task_label"] == task) & (t["part"] == part)])[1]
        cells = ", ".join(f"{r['optimizer']} at {r['batch_label']}" for _, r in g.iterrows())
        lines.append(f"- **unresolved optimum** (◦; fewer than two other trials within the tuner's tolerance of the "
                     f"best): {task} / {part}: {len(g)} of {known} tuned cells: {cells}")
    return ["## Flags", "", "Cells compared at an lr that is not a resolved, interior tuned optimum (marked †, ‡, "
            "§ and ◦ in the tables):", "", *lines, ""] if lines else []

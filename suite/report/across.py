"""The report's sections across tasks, per protocol part: mean ranks per task and the performance
profile (target part), and the tuning noise: each cell's spread under re-tuning and how stable
each table's ranking is (:mod:`suite.report.tables.stability`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from suite.report.data.metrics import performance_profile
from suite.report.figures import curves
from suite.report.readme import Context, Section, of, task_order
from suite.report.sections import headline
from suite.report.tables.comparison import profile, ranking, summary
from suite.report.tables.render import fmt
from suite.report.tables.stability import noise_table, ranking_stability, stability_table, tuning_noise


def cross_task(ctx: Context) -> list[Section]:
    """One section per protocol part: mean ranks per task, and the performance profile (target part)."""
    return [_part(ctx, part) for part in ctx.parts] if len(ctx.cells) else []


def _part(ctx: Context, part: str) -> Section:
    shown = ctx.shown_part(part)
    sec = Section(f"Across tasks: {part} part" if shown else "Across tasks")
    ranks, scores = {}, {}
    for task in task_order(ctx.runs):
        cells = of(ctx.cells, task, part)
        if len(cells):
            scores[task] = headline(ctx, cells["task"].iloc[0], part)
            ranks[task] = ranking(cells, [scores[task]], None, ctx.runs, ctx.alpha)
    if ranks:
        sec.add(summary(ranks, scores, shown), ctx.folder("tables", shown))
    if part == "target":
        _profile(ctx, sec, shown)
    return sec


def _profile(ctx: Context, sec: Section, shown: str) -> None:
    cells = ctx.cells[(ctx.cells["part"] == "target") & ctx.cells["has_target"]]
    if not ((cells["n_failed"] == 0) & ~cells["to_target_censored"].astype(bool)).any():
        return
    table, cost = profile(cells, shown)
    sec.add(table, ctx.folder("tables", shown))
    worst = float(cost.div(cost.min(axis=1), axis=0).max().max())
    taus = np.geomspace(1, max(2.0, 1.2 * worst), 200)
    sec.fig(curves.profile(performance_profile(cost, taus), ctx.folder("figures", shown) / "performance_profile",
                           ctx.opts),
            "Performance profile on the median steps to target: the fraction of problems an optimizer solves within "
            "τ × the best optimizer's steps (a censored median or a failed seed: unsolved); higher and further left "
            "is better.")


NOISE_INTRO = ("Each cell's whole tuning was repeated with independent tuner seeds (the sampler's and the tuning "
               "seeds), and each tuning's configuration trained over the same final seeds; the main tables show the "
               "first tuning. How much of a table is tuning noise:")


def tuning_noise_section(ctx: Context) -> Section:
    """Where re-tunings exist: per cell the spread of the tuned lr and headline value, per table the
    stability of its ranking."""
    sec = Section("Tuning noise and ranking stability")
    tunings = ctx.tunings
    if tunings is None or not len(tunings) or tunings["retune"].max() < 1:
        return sec
    lines = []
    for task in task_order(ctx.runs):
        for part in ctx.parts:
            cells = of(tunings, task, part)
            if not len(cells) or cells["retune"].nunique() < 2:
                continue
            score, where = headline(ctx, cells["task"].iloc[0], part), f"{task}, {part} part"
            noise = tuning_noise(cells, score)
            sec.add(noise_table(noise, score, where), ctx.folder("tables", task, ctx.shown_part(part)))
            lines.append({"task": task, "part": part, **ranking_stability(cells, score)})
            sec.intro.append(_noise_line(where, noise, lines[-1]))
    if lines:
        sec.intro = [NOISE_INTRO, "", *sec.intro, ""]
        sec.add(stability_table(lines), ctx.folder("tables"))
    return sec


def _noise_line(where: str, noise: pd.DataFrame, stable: dict) -> str:
    spread = noise["lr_spread_decades"]
    return (f"- {where}: {stable['tunings']} tunings; the tuned lr moves by a median {spread.median():.2f} decades "
            f"(at most {spread.max():.2f}) across them; ranking on {stable['metric']}: mean Kendall τ "
            f"{fmt(stable['kendall_tau_mean'])} over {stable['pairs']} row pairs, the best optimizer changes in "
            f"{stable['best_changes']} of {stable['rows']} rows.")

"""The README's "Batch-size science": per task the critical-batch fit, the lr-scaling slopes, the
noise scale and tunability (tables, figures and one line per fit); across tasks the theory checks
on the quadratic. Everything from stored rows and traces. The fits, slopes and noise comparison
read the study's target part (cells trained with a target); tunability reads every tuning trial on
its own objective."""
from __future__ import annotations

import math

import pandas as pd

from suite.report.data.metrics import protocol_parts
from suite.report.readme import Context, Section, per_task, scaling_cells, science_cells, slug, task_order
from suite.report.science import figures, fits, noise, tables
from suite.report.stats.batch_science import MIN_LR_POINTS
from suite.report.tables.render import fmt
from suite.store.runs import RunStore

RULES = {"linear rule (slope 1; Goyal et al. 2017)": 1.0, "square-root rule (slope 0.5; Malladi et al. 2022)": 0.5}
EXPECTED = {"sgd": "linear", "momentum": "linear", "nesterov": "linear", "adam": "square-root",
            "adamw": "square-root", "rmsprop": "square-root", "adagrad": "square-root"}


def science_section(ctx: Context) -> list[Section]:
    """One sub-section per task with something to say, then the theory checks."""
    out = [_task(ctx, task) for task in task_order(ctx.runs)]
    out.append(_theory(ctx))
    return [s for s in out if s.tables or s.figures or s.intro]


def _scaling_lines(table: pd.DataFrame) -> list[str]:
    lines = []
    for _, f in table.iterrows():
        if math.isnan(f["b_crit"]):
            lines.append(f"- {f['optimizer']}: no critical-batch fit ({f['n_batch_sizes']} batch sizes with an exact "
                         f"median, {f['censored']} censored, {f['failed']} failed; the fit needs 3 exact).")
            continue
        where = {">": " (beyond the largest batch measured: scaling was still near-perfect there; only E_min is "
                      "identified)",
                 "<": " (below the smallest batch measured: no scaling from the start; only S_min is identified)"}
        s_min = "" if f["b_crit_relation"] == ">" else f", S_min = {fmt(f['s_min'], 'count')} steps"
        fragile = (f"; fragile: leaving one batch size out moves it to {fmt(f['jackknife_lo'], 'count')}–"
                   f"{fmt(f['jackknife_hi'], 'count')}, outside its interval" if f["fragile"] else "")
        faster = f"; {f['faster_than_perfect']} pair(s) faster than perfect scaling ({f['faster_pairs']})" \
            if f["faster_than_perfect"] else ""
        lines.append(f"- {f['optimizer']}: B_crit = {fits.b_crit_text(f)}{where.get(f['b_crit_relation'], '')}"
                     f"{s_min}, E_min = {fmt(f['e_min'], 'count')} samples ({f['n_batch_sizes']} exact medians, "
                     f"{f['censored']} censored, {f['failed']} failed; {f['n_tunings']} tuning(s); RMSE "
                     f"{f['fit_rmse_log']:.2g} in log steps){fragile}{faster}.")
    return lines


def _verdict(lo: float, hi: float) -> str:
    within = [r for r, v in RULES.items() if lo <= v <= hi]
    return ("consistent with the " + " and the ".join(within)) if within else "consistent with neither rule"


def _lr_line(s: pd.Series) -> str:
    if math.isnan(s["slope"]):
        return (f"- {s['optimizer']}: not enough points ({s['n_batch_sizes']} batch size(s) with an exact median up to "
                f"its B_crit; a slope needs {MIN_LR_POINTS}).")
    rule = EXPECTED.get(s["optimizer"])
    proposed = f" (the {rule} rule is the one proposed for it)" if rule else ""
    return (f"- {s['optimizer']}: lr ∝ B^{fmt(s['slope'])} [{fmt(s['slope_lo'])}, {fmt(s['slope_hi'])}] over batch "
            f"sizes ≤ {fmt(s['b_max_used'], 'count')} ({s['n_batch_sizes']} used): "
            f"{_verdict(s['slope_lo'], s['slope_hi'])}{proposed}.")


def _batch_science(ctx: Context, sec: Section, curves: fits.Curves, table_dir, figure_dir) -> pd.DataFrame:
    sc, conf = ctx.cfg.science, ctx.cfg.statistics.confidence
    table = fits.batch_scaling(curves, int(sc.resamples), conf, int(sc.seed))
    sec.add(fits.batch_scaling_table(table, conf, int(sc.resamples)), table_dir)
    sec.intro += ["Critical batch size, S(B) = S_min·(1 + B_crit/B) (McCandlish et al. 2018), fitted to the target "
                  "part:", "", *_scaling_lines(table), ""]
    sec.fig(figures.batch_scaling(curves, table, figure_dir / "batch_scaling", ctx.opts),
            "Steps to target vs batch size per optimizer (log-log; Shallue et al. 2019), target part, primary tuning: "
            "medians over seeds (open circles), the fitted S(B), perfect scaling (dashed) from the smallest batch "
            "with an exact median; ▲ with an arrow: a censored median (a lower bound); ✕ on the top edge: most "
            "seeds diverged.")
    return table


def _task(ctx: Context, task: str) -> Section:
    sec = Section(task)
    cells = science_cells(ctx, task)
    rows = ctx.rows[ctx.rows["task_label"] == task]
    name = rows["task"].iloc[0]
    table_dir, figure_dir = ctx.out / "tables" / slug(task), ctx.out / "figures" / slug(task)
    plain = scaling_cells(protocol_parts(cells).get("target", cells.iloc[:0])) if len(cells) else cells
    table = pd.DataFrame(columns=list(fits.BATCH_SCALING))
    if len(plain) and name in ctx.targets:
        curves = fits.seed_curves(plain, ctx.runs)
        table = _batch_science(ctx, sec, curves, table_dir, figure_dir)
        slopes = fits.lr_scaling(fits.primary(plain), table, fits.exact_batches(curves),
                                 ctx.cfg.statistics.confidence)
        sec.add(fits.lr_scaling_table(slopes, ctx.cfg.statistics.confidence), table_dir)
        sec.intro += ["Learning-rate scaling, slope of log(reported lr) on log B:", "",
                      *(_lr_line(s) for _, s in slopes.iterrows()), ""]
    extra = rows[rows["purpose"].astype(str) == "lr_scaling"] if "purpose" in rows else rows.iloc[:0]
    curve = per_task(ctx.cfg.curve_metric, name)
    sec.fig(figures.lr_scaling_curves(extra, curve, figure_dir / "lr_scaling_curves", ctx.opts) if len(extra) else None,
            "Runs at (B, η) and (kB, kη) (purpose lr_scaling) on an epoch axis: where a scaling rule holds, "
            "configurations with the same η/B trace the same curve; a diverged run ✕ on the top edge.")
    reported = fits.primary(cells) if len(cells) else cells
    in_target = protocol_parts(reported).get("target", reported.iloc[:0])
    _noise(ctx, sec, rows, in_target if len(in_target) else reported, table, table_dir, figure_dir)
    parts = protocol_parts(ctx.runs[(ctx.runs["task_label"] == task) & ctx.runs["is_trial"]])
    for part, trials in parts.items():  # each part's trials on its own objective
        suffix = f"_{part}" if len(parts) > 1 else ""
        tuning = tables.tunability(trials, ctx.cfg.select)
        sec.add(tables.tunability_table(tuning, f"tunability{suffix}"), table_dir)
        sec.fig(figures.tunability(tuning, figure_dir / f"tunability{suffix}", ctx.opts),
                f"{part.capitalize()} part: median best {', '.join(tuning['objective'].unique())} after k tuning trials "
                f"(exact over each cell's finished trials; a failed trial counts as a failure); ✕ on the top edge: a "
                f"draw of k is more likely than not to hold only failed trials.")
    return sec


def _noise(ctx: Context, sec: Section, rows, cells, table, table_dir, figure_dir) -> None:
    """The noise scales along the reported runs of one part (the target part where there is one)."""
    data = noise.noise_scale(rows, cells)
    if data.empty:
        return
    sec.add(noise.noise_scale_table(data), table_dir)
    sec.fig(figures.noise_scale(data, rows, figure_dir / "noise_scale", ctx.opts),
            "Gradient noise scale against the training loss (log-log; training proceeds to the right) at the "
            "evaluations of the reported runs: exact values as lines where measured, the two-batch-size estimate as "
            "points, an estimate ≤ 0 as ▼ on the bottom edge.")
    sec.intro += [x for x in [noise.estimator_line(data)] if x] + [""]
    lines = noise.comparison_lines(table, noise.noise_at_target(cells, ctx.runs, rows),
                                   fits.b_crit_text) if len(table) else []
    if lines:
        sec.intro += ["Critical batch vs the gradient noise scale at the target (McCandlish et al. 2018 predict "
                      "B_crit ≈ B_noise for plain SGD; median over the reported runs at their first evaluation at or "
                      "after the target):", "", *lines, ""]


def _theory(ctx: Context) -> Section:
    sec = Section("Theory on the quadratic")
    runs = ctx.runs[ctx.runs["purpose"].astype(str) == "theory"] if "purpose" in ctx.runs else ctx.runs.iloc[:0]
    if runs.empty:
        return sec
    traces = RunStore(ctx.root).load_traces(runs["run_id"])
    grid = ctx.runs[ctx.runs["purpose"].astype(str) == "theory_boundary"]
    table = tables.theory_table(ctx.rows[ctx.rows["run_id"].isin(runs["run_id"])], runs, traces, ctx.trials, grid)
    sec.add(table, ctx.out / "tables")
    for _, t in table.data.iterrows():
        dev = t["rate_measured"] / t["rate_theory"] - 1 if t["rate_theory"] else math.nan
        sec.intro.append(f"- {t['method']} (κ = {t['kappa']:g}, lr = {t['lr']:.4g}, momentum = {t['momentum']:.4g}): "
                         f"measured rate {t['rate_measured']:.5f} vs theory {t['rate_theory']:.5f} ({dev:+.1%}).")
    bounds = table.data.drop_duplicates("two_over_L")
    for _, t in bounds[bounds["max_stable_lr"].notna()].iterrows():
        sec.intro.append(f"- Largest stable full-batch SGD lr (tuning trials' divergence boundary) "
                         f"{t['max_stable_lr']:.4g} vs 2/L = {t['two_over_L']:.4g} "
                         f"({t['max_stable_lr'] / t['two_over_L'] - 1:+.1%}).")
    if not traces.empty or sec.intro:
        sec.intro.append("")
    return sec

"""The README's "Batch-size science": per task the critical-batch fit, the lr-scaling slopes, the
noise scale and tunability (tables, figures and one line per fit); across tasks the theory checks
on the quadratic. Everything from stored rows and traces."""
from __future__ import annotations

import math

import pandas as pd

from suite.report.readme import Context, Section, per_task, scaling_cells, science_cells, slug, task_order
from suite.report.science import figures, tables
from suite.report.tables.render import fmt, interval
from suite.store.runs import RunStore

RULES = {"linear rule (slope 1; Goyal et al. 2017)": 1.0, "square-root rule (slope 0.5; Malladi et al. 2022)": 0.5}
EXPECTED = {"sgd": "linear", "momentum": "linear", "nesterov": "linear", "adam": "square-root",
            "adamw": "square-root", "rmsprop": "square-root", "adagrad": "square-root"}


def science_section(ctx: Context) -> list[Section]:
    """One sub-section per task with something to say, then the theory checks."""
    out = [_task(ctx, task) for task in task_order(ctx.runs)]
    out.append(_theory(ctx))
    return [s for s in out if s.tables or s.figures or s.intro]


def _scaling_lines(fits: pd.DataFrame, sizes: dict[str, list[float]]) -> list[str]:
    lines = []
    for _, f in fits.iterrows():
        if math.isnan(f["b_crit"]):
            lines.append(f"- {f['optimizer']}: no critical-batch fit ({f['n_batch_sizes']} uncensored batch sizes, "
                         f"{f['censored']} censored; the fit needs 3).")
            continue
        lines.append(f"- {f['optimizer']}: B_crit = {interval(f['b_crit'], f['b_crit_lo'], f['b_crit_hi'])}"
                     f"{_outside(f['b_crit'], sizes.get(f['optimizer'], ()))}, S_min = "
                     f"{interval(f['s_min'], f['s_min_lo'], f['s_min_hi'], 'count')} steps, E_min = "
                     f"{fmt(f['e_min'], 'count')} samples ({f['n_batch_sizes']} batch sizes fitted, {f['censored']} "
                     f"censored; RMSE {f['fit_rmse_log']:.2g} in log steps).")
    return lines


def _outside(b_crit: float, sizes) -> str:
    """Say so where the fitted B_crit lies outside the batch sizes measured (an extrapolation)."""
    if not len(sizes):
        return ""
    if b_crit < min(sizes):
        return " (below the smallest batch measured: steps fell less than proportionally from the start)"
    if b_crit > max(sizes):
        return " (above the largest batch measured: scaling was still near-perfect there)"
    return ""


def _verdict(slope: float, lo: float, hi: float) -> str:
    if math.isnan(lo):
        return "no interval (fewer than 3 batch sizes), so no rule can be told apart"
    within = [r for r, v in RULES.items() if lo <= v <= hi]
    return ("consistent with the " + " and the ".join(within)) if within else "consistent with neither rule"


def _lr_line(s: pd.Series) -> str:
    if math.isnan(s["slope"]):
        return (f"- {s['optimizer']}: no slope ({s['n_batch_sizes']} usable batch size(s) up to its B_crit; lrs at an "
                f"edge of their range or registry defaults are left out).")
    rule = EXPECTED.get(s["optimizer"])
    proposed = f" (the {rule} rule is the one proposed for it)" if rule else ""
    return (f"- {s['optimizer']}: lr ∝ B^{interval(s['slope'], s['slope_lo'], s['slope_hi'])} over batch sizes ≤ "
            f"{fmt(s['b_max_used'], 'count')} ({s['n_batch_sizes']} used): "
            f"{_verdict(s['slope'], s['slope_lo'], s['slope_hi'])}{proposed}.")


def _noise_lines(fits: pd.DataFrame, at_target: pd.DataFrame) -> list[str]:
    lines = []
    for _, f in fits.iterrows():
        if f["optimizer"] not in at_target.index or math.isnan(f["b_crit"]):
            continue
        exact, est = at_target.loc[f["optimizer"], "b_simple_exact"], at_target.loc[f["optimizer"], "b_simple_est"]
        lines.append(f"- {f['optimizer']}: B_crit = {interval(f['b_crit'], f['b_crit_lo'], f['b_crit_hi'])} vs the "
                     f"noise scale at the target B_simple = {fmt(exact)} (exact) / {fmt(est)} (estimate), median over "
                     f"the reported runs at their first evaluation at or after the target.")
    return lines


def _caps(cells: pd.DataFrame) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, float]] = {}
    for _, c in cells.iterrows():
        out.setdefault(c["optimizer"], {})[float(c["batch_size"])] = c["cap_steps"]
    return out


def _batch_science(ctx: Context, sec: Section, name: str, plain: pd.DataFrame, table_dir, figure_dir) -> pd.DataFrame:
    sc, conf = ctx.cfg.science, ctx.cfg.statistics.confidence
    fits = tables.batch_scaling(plain, ctx.runs, int(sc.resamples), conf, int(sc.seed))
    sec.add(tables.batch_scaling_table(fits, conf, int(sc.resamples)), table_dir)
    sec.intro += ["Critical batch size, S(B) = S_min·(1 + B_crit/B) (McCandlish et al. 2018):", "",
                  *_scaling_lines(fits, {o: list(v) for o, v in tables.seed_steps(plain, ctx.runs).items()}), ""]
    sec.fig(figures.batch_scaling(tables.seed_steps(plain, ctx.runs), _caps(plain), fits,
                                  figure_dir / "batch_scaling", ctx.opts),
            "Steps to target vs batch size per optimizer (log-log; Shallue et al. 2019): medians over seeds, the "
            "fitted S(B), perfect scaling (dashed) from the smallest uncensored batch, ▲ censored medians at the cap.")
    return fits


def _task(ctx: Context, task: str) -> Section:
    sec = Section(task)
    cells = science_cells(ctx, task)
    rows = ctx.rows[ctx.rows["task_label"] == task]
    name = rows["task"].iloc[0]
    table_dir, figure_dir = ctx.out / "tables" / slug(task), ctx.out / "figures" / slug(task)
    plain = scaling_cells(cells) if len(cells) else cells
    fits = pd.DataFrame(columns=list(tables.BATCH_SCALING))
    if len(plain) and name in ctx.targets and (plain["part"] == "target").all():
        fits = _batch_science(ctx, sec, name, plain, table_dir, figure_dir)
    if len(plain):
        slopes = tables.lr_scaling(plain, fits, ctx.cfg.statistics.confidence)
        sec.add(tables.lr_scaling_table(slopes, ctx.cfg.statistics.confidence), table_dir)
        sec.intro += ["Learning-rate scaling, slope of log(reported lr) on log B:", "",
                      *(_lr_line(s) for _, s in slopes.iterrows()), ""]
    extra = rows[rows["purpose"].astype(str) == "lr_scaling"] if "purpose" in rows else rows.iloc[:0]
    curve = per_task(ctx.cfg.curve_metric, name)
    sec.fig(figures.lr_scaling_curves(extra, curve, figure_dir / "lr_scaling_curves", ctx.opts) if len(extra) else None,
            "Runs at (B, η) and (kB, kη) (purpose lr_scaling) on an epoch axis: where a scaling rule holds, "
            "configurations with the same η/B trace the same curve.")
    _noise(ctx, sec, rows, plain, fits, table_dir, figure_dir)
    trials = ctx.runs[(ctx.runs["task_label"] == task) & ctx.runs["is_trial"]]
    if len(trials):
        curves = tables.tunability(trials, ctx.cfg.select)
        sec.add(tables.tunability_table(curves, ctx.cfg.select), table_dir)
        sec.fig(figures.tunability(curves, ctx.cfg.select, figure_dir / "tunability", ctx.opts),
                f"Expected best final {ctx.cfg.select} after k tuning trials (exact over each cell's finished trials).")
    return sec


def _noise(ctx: Context, sec: Section, rows, plain, fits, table_dir, figure_dir) -> None:
    noise = tables.noise_scale(rows)
    if noise.empty:
        return
    sec.add(tables.noise_scale_table(noise), table_dir)
    sec.fig(figures.noise_scale(noise, figure_dir / "noise_scale", ctx.opts),
            "Gradient noise scale B_simple against the training loss (log-log; training proceeds to the right): "
            "exact (lines) and the two-batch-size estimate (points).")
    lines = _noise_lines(fits, tables.noise_at_target(plain, ctx.runs, rows)) if len(fits) else []
    if lines:
        sec.intro += ["Critical batch vs the gradient noise scale at the target (McCandlish et al. predict "
                      "B_crit ≈ B_noise):", "", *lines, ""]


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

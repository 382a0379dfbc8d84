"""The batch-size science tables, from report frames (:mod:`suite.report.stats.batch_science` does
the math): ``batch_scaling``, ``lr_scaling``, ``noise_scale`` and ``tunability`` per task, ``theory``
across tasks.
Their CSV columns are fixed (others read them); the Markdown/LaTeX versions show the same numbers."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from suite.report.stats import batch_science
from suite.report.tables.comparison import optimizer_order
from suite.report.tables.render import Table, fmt, interval, plain_table
from suite.report.tables.tuning import flags

BATCH_SCALING = ("optimizer", "b_crit", "b_crit_lo", "b_crit_hi", "s_min", "s_min_lo", "s_min_hi", "e_min",
                 "fit_rmse_log", "n_batch_sizes", "censored")
LR_SCALING = ("optimizer", "slope", "slope_lo", "slope_hi", "b_max_used", "n_batch_sizes")
NOISE_SCALE = ("optimizer", "batch_size", "seed", "step", "train_loss", "b_simple_est", "b_simple_exact")
THEORY = ("method", "kappa", "lr", "momentum", "rate_measured", "rate_theory", "max_stable_lr", "two_over_L")
TUNABILITY = ("optimizer", "batch_size", "k", "expected_best")


def seed_steps(cells: pd.DataFrame, runs: pd.DataFrame) -> dict[str, dict[float, list[float]]]:
    """Per optimizer and batch size: the steps to target of each seed (inf: not reached)."""
    by_id = runs.set_index("run_id")
    out: dict[str, dict[float, list[float]]] = {}
    for _, line in cells[cells["has_target"]].iterrows():
        steps = by_id.loc[line["run_ids"].split(","), "steps_to_target"].astype(float).fillna(np.inf)
        out.setdefault(line["optimizer"], {})[float(line["batch_size"])] = steps.tolist()
    return out


def batch_scaling(cells: pd.DataFrame, runs: pd.DataFrame, resamples: int, confidence: float,
                  seed: int) -> pd.DataFrame:
    """One critical-batch fit per optimizer (:data:`BATCH_SCALING` columns)."""
    steps = seed_steps(cells, runs)
    lines = [{"optimizer": o, **batch_science.batch_scaling(steps[o], resamples, confidence, seed)}
             for o in optimizer_order(steps)]
    return pd.DataFrame(lines, columns=list(BATCH_SCALING))


def batch_scaling_table(fits: pd.DataFrame, confidence: float, resamples: int) -> Table:
    text = pd.DataFrame({
        "B_crit": [interval(*r) for r in fits[["b_crit", "b_crit_lo", "b_crit_hi"]].to_numpy()],
        "S_min (steps)": [interval(*r, kind="count") for r in fits[["s_min", "s_min_lo", "s_min_hi"]].to_numpy()],
        "E_min (samples)": fits["e_min"].map(lambda v: fmt(v, "count")),
        "RMSE (log steps)": fits["fit_rmse_log"].map(fmt),
        "batch sizes fitted": fits["n_batch_sizes"].map(str), "censored": fits["censored"].map(str),
    }).set_axis(pd.Index(fits["optimizer"], name="optimizer"))
    caption = (f"Critical batch size: S(B) = S_min·(1 + B_crit/B) fitted to the median steps-to-target over seeds "
               f"per batch size (least squares in log steps; batch sizes whose median is censored left out); "
               f"[{confidence:.0%} bootstrap interval over seeds, {resamples} resamples; none with one seed]; "
               f"E_min = S_min·B_crit samples.")
    return plain_table("batch_scaling", caption, text, fits)


def lr_scaling(cells: pd.DataFrame, fits: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Slope of log(reported lr) on log(B) per optimizer over batch sizes ≤ its fitted B_crit (all
    without a fit), leaving out lrs at an edge of their search range, registry-default lrs and lrs of
    cells whose tuning never reached the target."""
    b_crit = fits.set_index("optimizer")["b_crit"] if len(fits) else pd.Series(dtype=float)
    lines = []
    for name in optimizer_order(cells["optimizer"]):
        c = cells[cells["optimizer"] == name]
        c = c[~flags(c, "edge") & ~flags(c, "lr_fallback") & ~flags(c, "lr_unreached")]
        limit = b_crit.get(name, math.nan)
        used = c if math.isnan(limit) else c[c["batch_size"] <= limit]
        slope = batch_science.lr_slope(used["batch_size"], used["lr"], confidence)
        lines.append((name, *slope, float(used["batch_size"].max()) if len(used) else math.nan, len(used)))
    return pd.DataFrame(lines, columns=list(LR_SCALING))


def lr_scaling_table(slopes: pd.DataFrame, confidence: float) -> Table:
    text = pd.DataFrame({
        "slope of log lr on log B": [interval(*r) for r in slopes[["slope", "slope_lo", "slope_hi"]].to_numpy()],
        "largest batch used": slopes["b_max_used"].map(lambda v: fmt(v, "count")),
        "batch sizes": slopes["n_batch_sizes"].map(str),
    }).set_axis(pd.Index(slopes["optimizer"], name="optimizer"))
    caption = (f"How the reported lr moves with the batch size: least-squares slope of log lr on log B over batch "
               f"sizes ≤ the fitted B_crit (all without a fit; edge-of-range and registry-default lrs left out), "
               f"[{confidence:.0%} t-interval; none with fewer than 3 batch sizes]. Linear rule: slope 1 (SGD, "
               f"momentum; Goyal et al. 2017); square-root rule: slope 0.5 (Adam family; Malladi et al. 2022).")
    return plain_table("lr_scaling", caption, text, slopes)


def noise_scale(rows: pd.DataFrame) -> pd.DataFrame:
    """Every evaluation of the task's ordinary runs where a noise scale was measured."""
    data = rows[~rows["is_trial"] & ~rows["is_extra"].astype(bool)]
    data = data[data["b_simple_est"].notna() | data["b_simple_exact"].notna()]
    rank = {o: i for i, o in enumerate(optimizer_order(data["optimizer"]))}
    data = data.assign(_o=data["optimizer"].map(rank)).sort_values(["_o", "batch_size", "seed", "step"])
    return data[list(NOISE_SCALE)].reset_index(drop=True)


def noise_scale_table(noise: pd.DataFrame) -> Table:
    """Summary per optimizer (the CSV holds every evaluation)."""
    g = noise.groupby("optimizer", sort=False)
    text = pd.DataFrame({"evaluations": g.size().map(str),
                         "B_simple exact (median)": g["b_simple_exact"].median().map(fmt),
                         "B_simple estimate (median)": g["b_simple_est"].median().map(fmt)})
    text.index.name = "optimizer"
    caption = ("Gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018) at the evaluations of the final "
               "runs: exact (per-example gradients) and the two-batch-size estimate; the CSV has every evaluation.")
    return plain_table("noise_scale", caption, text, noise)


def noise_at_target(cells: pd.DataFrame, runs: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer: the median B_simple (exact, estimate) at the first evaluation at or after each
    reported run's steps-to-target."""
    ids = set(",".join(cells["run_ids"]).split(",")) if len(cells) else set()
    hit = runs[runs["run_id"].isin(ids) & runs["reached"]].set_index("run_id")["steps_to_target"]
    at = rows[rows["run_id"].isin(hit.index)]
    at = at[at["step"] >= at["run_id"].map(hit)].sort_values("step").groupby("run_id").head(1)
    return at.groupby("optimizer")[["b_simple_exact", "b_simple_est"]].median()


def _trial_values(trials: pd.DataFrame, metric: str) -> pd.Series:
    """Each finished (unpruned) trial's final ``metric``; a diverged run gets the tuner's value for
    it (divergence_factor × its initial value for a loss; 0 for an accuracy). A trial trained at
    several tuning seeds is one draw: the mean of its runs."""
    done = trials[~trials["pruned"].astype(bool) | trials["diverged"].astype(bool)]
    factor = done["config_key"].map(lambda k: json.loads(k).get("divergence_factor", 1e3))
    failed = 0.0 * done[f"initial_{metric}"] if metric.endswith("accuracy") else done[f"initial_{metric}"] * factor
    values = done[f"final_{metric}"].where(~done["diverged"].astype(bool), failed)
    if {"study", "trial"} <= set(done):
        return values.groupby([done["study"], done["trial"]]).mean()
    return values


def tunability(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Expected best ``metric`` after k of a cell's trials, k = 1..n (:data:`TUNABILITY` columns)."""
    plain = trials[(trials["sampling"] == "shuffle") & (trials["accumulation_reduction"] == "mean")
                   & (trials["accumulation_steps"] == 1)]
    lines = []
    for name in optimizer_order(plain["optimizer"]):
        mine = plain[plain["optimizer"] == name]
        for b, g in mine.groupby("batch_size"):
            values = _trial_values(g, metric).dropna()
            for k, e in enumerate(batch_science.expected_best_of_k(values.tolist(), metric.endswith("accuracy")), start=1):
                lines.append((name, int(b), k, e))
    return pd.DataFrame(lines, columns=list(TUNABILITY))  # optimizer (registry order), batch size, k


def tunability_table(curves: pd.DataFrame, metric: str) -> Table:
    last = curves.groupby(["optimizer", "batch_size"], sort=False).agg(
        trials=("k", "max"), one=("expected_best", "first"), all=("expected_best", "last")).reset_index()
    text = pd.DataFrame({"batch size": last["batch_size"].map(str), "trials (n)": last["trials"].map(str),
                         "expected best of 1": last["one"].map(fmt), "best of n": last["all"].map(fmt)}
                        ).set_axis(pd.Index(last["optimizer"], name="optimizer"))
    caption = (f"Tunability (Sivaprasad et al. 2020): the expected best final {metric} after k tuning trials drawn "
               f"without replacement from a cell's n finished ones (diverged trials at the tuner's value), exact; "
               f"the CSV has every k. The trials were chosen by the tuner, not drawn at random: read it as a "
               f"summary of the trials' spread.")
    return plain_table("tunability", caption, text, curves)


def theory_table(rows: pd.DataFrame, summary: pd.DataFrame, traces: pd.DataFrame, trials: pd.DataFrame,
                 grid: pd.DataFrame | None = None) -> Table:
    """Measured vs theoretical linear rates of the ``purpose=theory`` runs (full-batch, quadratic)."""
    from_runs = _theory_runs(rows, summary, traces)
    data = from_runs.groupby(["task_label", "method", "kappa", "lr", "momentum"], sort=False, dropna=False).agg(
        rate_measured=("rate_measured", "median"), rate_theory=("rate_theory", "first"),
        two_over_L=("two_over_L", "first")).reset_index().sort_values(["method", "kappa", "lr"])
    boundary = _grid_boundary(grid if grid is not None else summary)
    if boundary.empty:  # no constant-lr grid around 2/L: the full-batch SGD tuning trials' boundary
        gd = trials[(trials["optimizer"] == "sgd") & trials["batch_label"].str.endswith("(GD)")] if len(trials) \
            else trials
        boundary = gd.groupby("task_label")["divergence_boundary"].first() if len(gd) else pd.Series(dtype=float)
    data["max_stable_lr"] = data["task_label"].map(boundary).astype(float)
    data = data[list(THEORY)]
    text = pd.DataFrame({"κ": data["kappa"].map(fmt), "lr": data["lr"].map(fmt), "momentum": data["momentum"].map(fmt),
                         "ρ measured": data["rate_measured"].map(_rate), "ρ theory": data["rate_theory"].map(_rate),
                         "largest stable lr": data["max_stable_lr"].map(fmt), "2/L": data["two_over_L"].map(fmt)})
    text.index = pd.Index(data["method"], name="method")
    caption = ("Linear convergence on the conditioned quadratic (full batch): the rate ρ of the distance to the "
               "optimum measured from every step's loss (ρ² = per-step ratio of the excess loss, fitted over the tail "
               "before float noise) beside theory (GD: max|1 − ηλ|, (κ−1)/(κ+1) at η = 2/(L+μ); heavy ball: its "
               "iteration's spectral radius, (√κ−1)/(√κ+1) at the optimal η, μ); L = 2κ, μ = 2. largest stable lr: "
               "the divergence boundary of GD at constant lrs from 0.8 to 1.25 × 2/L (geometric mean of the largest "
               "stable and the smallest diverged one; the full-batch SGD tuning trials' where that grid is absent), "
               "beside 2/L.")
    return plain_table("theory", caption, text, data)


def _grid_boundary(summary: pd.DataFrame) -> pd.Series:
    """Per task: the geometric mean of the largest stable and the smallest diverged lr of the
    ``purpose=theory_boundary`` runs (GD at constant lrs around 2/L)."""
    if "purpose" not in summary:
        return pd.Series(dtype=float)
    grid = summary[summary["purpose"].astype(str) == "theory_boundary"]
    out = {}
    for task, g in grid.groupby("task_label"):
        stable, diverged = g.loc[~g["diverged"].astype(bool), "lr"], g.loc[g["diverged"].astype(bool), "lr"]
        if len(stable) and len(diverged) and stable.max() < diverged.min():
            out[task] = math.sqrt(stable.max() * diverged.min())
    return pd.Series(out, dtype=float)


def _rate(v: float) -> str:
    return f"{v:.5f}" if not math.isnan(v) else "—"


def method_of(optimizer: str, hparams: dict) -> str:
    momentum = float(hparams.get("momentum") or 0.0)
    if optimizer not in ("sgd", "momentum", "nesterov"):
        return optimizer
    if hparams.get("nesterov"):
        return "nesterov"
    return "heavy_ball" if momentum > 0 else "gd"


def _theory_runs(rows: pd.DataFrame, summary: pd.DataFrame, traces: pd.DataFrame) -> pd.DataFrame:
    runs = summary[summary["purpose"].astype(str) == "theory"] if "purpose" in summary else summary.iloc[:0]
    lines = []
    for _, r in runs.iterrows():
        config = json.loads(rows.loc[rows["run_id"] == r["run_id"], "config"].iloc[0])
        kappa = (config.get("task_options") or {}).get("condition_number")
        kappa = float(kappa) if kappa is not None else math.nan
        hparams = config.get("hparams") or {}
        method, momentum = method_of(r["optimizer"], hparams), float(hparams.get("momentum") or 0.0)
        L, mu = 2 * kappa, 2.0
        trace = traces[traces["run_id"] == r["run_id"]].sort_values("step_lo") if len(traces) else traces
        optimal = float(rows.loc[rows["run_id"] == r["run_id"], "optimal_loss"].iloc[0])
        floor = 1e3 * batch_science.FLOAT_EPS.get(config.get("dtype", "float32"), 1e-7) * abs(optimal)
        rate = batch_science.linear_rate(trace["step_lo"], trace["count"], trace["mean"] - optimal, floor) \
            if len(trace) else math.nan
        lines.append(dict(task_label=r["task_label"], method=method, kappa=kappa, lr=float(r["lr"]),
                          momentum=momentum, rate_measured=rate, two_over_L=2 / L,
                          rate_theory=batch_science.theory_rate(method, float(r["lr"]), momentum, L, mu)))
    return pd.DataFrame(lines, columns=["task_label", "method", "kappa", "lr", "momentum", "rate_measured",
                                        "rate_theory", "two_over_L"])

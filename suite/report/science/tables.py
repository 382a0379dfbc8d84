"""The batch-size science tables that are not fits (:mod:`suite.report.science.fits`) or noise
scales (:mod:`suite.report.science.noise`): ``tunability`` per task, ``theory`` across tasks.
Their CSV columns are fixed (others read them); the Markdown/LaTeX versions show the same numbers."""
from __future__ import annotations

import json
import math

import pandas as pd

from suite.report.data.metrics import trained_to_target
from suite.report.stats import batch_science
from suite.report.tables.comparison import optimizer_order
from suite.report.tables.render import Table, fmt, plain_table

THEORY = ("method", "kappa", "lr", "momentum", "rate_measured", "rate_theory", "max_stable_lr", "two_over_L")
TUNABILITY = ("optimizer", "batch_size", "k", "objective", "median_best", "p_finished")


def trial_values(trials: pd.DataFrame, metric: str) -> tuple[pd.Series, str]:
    """Each finished (unpruned) trial's value on the tuner's objective, and its name: steps to
    target under the target protocol, else the final ``metric``; NaN where the trial failed (a seed
    diverged, or did not reach the target). A trial trained at several tuning seeds is one draw."""
    done = trials[~trials["pruned"].astype(bool) | trials["diverged"].astype(bool)]
    by_steps = trained_to_target(done["config_key"].iloc[0]) if len(done) else False
    column = "steps_to_target" if by_steps else f"final_{metric}"
    values = done[column].where(~done["diverged"].astype(bool))
    keys = [done["study"], done["trial"]] if {"study", "trial"} <= set(done) else [done["run_id"]]
    per_trial = values.groupby(keys).agg(lambda v: v.mean(skipna=False))
    return per_trial, "steps to target" if by_steps else f"final {metric}"


def tunability(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The best after k of a cell's trials, k = 1..n (:data:`TUNABILITY` columns)."""
    plain = trials[(trials["sampling"] == "shuffle") & (trials["accumulation_reduction"] == "mean")
                   & (trials["accumulation_steps"] == 1)]
    lines = []
    for name in optimizer_order(plain["optimizer"]):
        mine = plain[plain["optimizer"] == name]
        for b, g in mine.groupby("batch_size"):
            values, objective = trial_values(g, metric)
            maximize = objective.endswith("accuracy")
            for k, (best, p) in enumerate(batch_science.best_of_k(values.tolist(), maximize), start=1):
                lines.append((name, int(b), k, objective, best, p))
    return pd.DataFrame(lines, columns=list(TUNABILITY))  # optimizer (registry order), batch size, k


def tunability_table(curves: pd.DataFrame, name: str = "tunability") -> Table:
    g = curves.groupby(["optimizer", "batch_size"], sort=False)
    last = g.agg(trials=("k", "max"), one=("median_best", "first"), all=("median_best", "last"),
                 p_one=("p_finished", "first")).reset_index()
    kind = "count" if curves["objective"].eq("steps to target").all() else "num"
    text = pd.DataFrame({"batch size": last["batch_size"].map(str), "trials (n)": last["trials"].map(str),
                         "one trial finishes": last["p_one"].map(lambda p: f"{p:.0%}"),
                         "median best of 1": last["one"].map(lambda v: fmt(v, kind) if v == v else "failed"),
                         "best of n": last["all"].map(lambda v: fmt(v, kind) if v == v else "failed")}
                        ).set_axis(pd.Index(last["optimizer"], name="optimizer"))
    objective = ", ".join(curves["objective"].unique())
    caption = (f"Tunability (after Sivaprasad et al. 2020), on the tuner's objective ({objective}): the median of the "
               f"best of k tuning trials drawn without replacement from a cell's n finished ones, exactly; a failed "
               f"trial (diverged, or the target not reached) counts as a failure, not as a penalty value ('failed': a "
               f"draw of k is more likely than not to hold only failures); 'one trial finishes': the chance that a "
               f"single trial did. The CSV has every k. The trials were chosen by the tuner, not drawn at random: "
               f"read it as a summary of the trials' spread.")
    return plain_table(name, caption, text, curves)


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

"""Figures of the batch-size science: the critical-batch fit (Shallue et al. 2019 style), the
(B, η) vs (kB, kη) curves, the gradient noise scale against training loss, and tunability. Censored,
failed and off-axis values follow :mod:`suite.report.figures.marks`."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from suite.report.figures import marks, style
from suite.report.figures.curves import FigureOptions, individual, label, label_rows, panel_grid
from suite.report.figures.style import save
from suite.report.science.fits import Curves, bounded
from suite.report.stats.bounds import censored_median
from suite.report.stats.critical_batch import scaling_curve
from suite.report.tables.comparison import optimizer_order


def _fit_panel(ax, curve: dict, fit: pd.Series, color, opts: FigureOptions) -> None:
    """One optimizer (its primary tuning): seeds that reached the target, the medians (exact ones
    joined by nothing but the fit), censored ▲ and failed ✕, the fit, perfect scaling."""
    sizes = np.array(sorted(curve), dtype=float)
    meds = [censored_median(curve[b][0]) for b in sizes]
    med = np.array([m for m, _ in meds])
    exact = np.isfinite(med) & ~np.array([c for _, c in meds])
    if individual(max(len(t[0]) for t in curve.values()), opts):
        for b in sizes:
            s = curve[b][0]
            ax.scatter(np.full((~s.censored).sum(), b), s.steps[~s.censored], color=color, s=12, alpha=0.7)
    ax.plot(sizes[exact], med[exact], ls="", marker="o", mfc="white", mec=color, ms=6)
    bound = np.isfinite(med) & ~exact
    marks.censored(ax, sizes[bound], med[bound], color)
    marks.failed(ax, sizes[~np.isfinite(med)], color)
    if not math.isnan(fit["b_crit"]):
        grid = np.geomspace(sizes.min(), sizes.max(), 100)
        ax.plot(grid, scaling_curve(grid, fit["s_min"], fit["b_crit"]), color=color, lw=1.5)
    if exact.any():
        b0, s0 = sizes[exact][0], med[exact][0]
        ax.plot(sizes[sizes >= b0], s0 * b0 / sizes[sizes >= b0], ls="--", color="0.5", lw=1)


def _fit_title(name: str, f: pd.Series) -> str:
    if math.isnan(f["b_crit"]):
        return f"{name}: no fit"
    return f"{name}: B_crit {bounded(f['b_crit'], f['b_min'], f['b_max'])}" + (" (fragile)" if f["fragile"] else "")


def batch_scaling(curves: Curves, fits: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """Steps to target vs batch size per optimizer (log-log) with the fitted S(B)."""
    names = [n for n in optimizer_order(curves) if curves[n]]
    limits = marks.log_limits([v for n in names for t in curves[n].values() for v in t[0].steps])
    if limits is None:  # nothing finite and positive to put on a log axis
        return None
    pal, fit = style.palette(names), fits.set_index("optimizer")
    fig, axes = panel_grid(len(names), sharey=True)
    for ax, name in zip(axes.flat, names):
        _fit_panel(ax, curves[name], fit.loc[name], pal[name], opts)
        ax.set(xscale="log", yscale="log", xlabel="batch size (log)", title=_fit_title(name, fit.loc[name]))
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylim(limits[0], limits[1] * 1.6)  # shared; headroom for the arrows and edge marks
    label_rows(axes, "steps to target (log)")
    status = [censored_median(t[0]) for c in curves.values() for t in c.values()]
    handles = [Line2D([], [], color="0.3", lw=1.5), Line2D([], [], ls="", marker="o", mfc="white", mec="0.3"),
               Line2D([], [], ls="--", color="0.5")]
    labels = ["fit S_min·(1 + B_crit/B)", "median over seeds (primary tuning)",
              "perfect scaling from the smallest batch with an exact median"]
    if individual(max(len(t[0]) for c in curves.values() for t in c.values()), opts):
        handles.append(Line2D([], [], ls="", marker="o", color="0.3", ms=3))
        labels.append("one seed that reached the target")
    conv = marks.legend_entries({"censored": any(np.isfinite(m) and b for m, b in status),
                                 "failed": any(not np.isfinite(m) for m, _ in status)})
    style.legend(fig, handles + conv[0], labels + conv[1], title=None)
    return save(fig, stem, opts)


def lr_scaling_curves(rows: pd.DataFrame, metric: str, stem: Path, opts: FigureOptions) -> Path | None:
    """``purpose=lr_scaling`` runs: ``metric`` vs epochs per (B, η); a scaling rule holds where the
    curves of (B, η) and (kB, kη) coincide. A diverged run is clipped at the axis, ✕ on the edge."""
    data = rows[(rows["epoch"] > 0) & (rows[metric] > 0)]
    names = optimizer_order(data["optimizer"])
    if not names:
        return None
    limits = marks.log_limits(data.loc[~data["diverged"].astype(bool), metric])
    fig, axes = panel_grid(len(names), sharey=True, size=(4.0, 3.0))
    handles, labels = [], []
    for ax, name in zip(axes.flat, names):
        mine = data[data["optimizer"] == name]
        configs = mine[["batch_size", "lr"]].drop_duplicates().sort_values("batch_size")
        shades = sns.color_palette("viridis", len(configs))
        for color, (b, lr) in zip(shades, configs.itertuples(index=False)):
            runs = mine[(mine["batch_size"] == b) & (mine["lr"] == lr)]
            curve = runs.groupby("step")[["epoch", metric]].mean()
            ax.plot(curve["epoch"], curve[metric], color=color, lw=1.4, marker="o", ms=2.5)
            if runs["diverged"].astype(bool).any():
                marks.failed(ax, curve["epoch"].tail(1), color, size=6)
            handles.append(Line2D([], [], color=color))
            labels.append(f"{name}: B={b}, η={lr:.3g} (η/B={lr / b:.3g})"
                          + (" (diverged)" if runs["diverged"].astype(bool).any() else ""))
        ax.set(xscale="log", yscale="log", xlabel="epochs", title=name)
        ax.grid(alpha=0.3)
    if limits:
        axes.flat[0].set_ylim(*limits)
    label_rows(axes, label(metric, rows))
    style.legend(fig, handles, labels, title=None)
    return save(fig, stem, opts)


def _batch_panels(data: pd.DataFrame):
    """One panel per batch size, hue = optimizer: the figure, its axes, the hue order and palette,
    and per panel (axis, batch size, [(optimizer, colour, its rows)])."""
    sizes = sorted(data["batch_size"].unique())
    hue = optimizer_order(data["optimizer"])
    pal = style.palette(hue)
    fig, axes = panel_grid(len(sizes), sharey=True)
    panels = [(ax, b, [(name, pal[name], data[(data["batch_size"] == b) & (data["optimizer"] == name)])
                       for name in hue]) for ax, b in zip(axes.flat, sizes)]
    return fig, axes, hue, pal, panels


NOISE_LINES = {"b_noise_exact": ("--", "B_noise = tr(HΣ)/(GᵀHG), exact"),
               "b_simple_exact": ("-", "B_simple = tr(Σ)/|G|², exact (per-example gradients)")}


def _joined(runs: list[pd.DataFrame], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """The runs' (x, y) one after another with NaN between them: drawn as one line, broken where a run ends."""
    gap = np.array([np.nan])
    return tuple(np.concatenate([a for run in runs for a in (run[c].to_numpy(float), gap)]) for c in (x, y))


def noise_scale(noise: pd.DataFrame, rows: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """Noise scales vs training loss (log-log, loss decreasing to the right), one panel per batch
    size: the exact values as lines (where measured), the two-batch estimate as points, an estimate
    ≤ 0 as ▼ on the bottom edge; the axes span the positive values measured."""
    data = noise[noise["train_loss"] > 0]
    if data.empty:
        return None
    columns = ["b_simple_est", *(c for c in NOISE_LINES if data[c].notna().any())]
    finished = data[~data["diverged"].astype(bool)]
    y_limits = marks.log_limits(finished[columns].to_numpy().ravel())
    x_limits = marks.log_limits(finished["train_loss"])
    if y_limits is None:  # no positive noise scale measured: nothing to put on a log axis
        return None
    fig, axes, hue, pal, panels = _batch_panels(data)
    for ax, b, lines in panels:
        for _, color, mine in lines:
            runs = [run for _, run in mine.groupby("seed")]
            if not runs:
                continue
            if x_limits:  # a diverged run's loss grew off the axis: ✕ where it left
                marks.failed(ax, [min(run["train_loss"].iloc[-1], x_limits[1] / 1.01) for run in runs
                                  if run["diverged"].any()], color, size=6)
            for col in columns[1:]:  # the seeds' lines as one, broken between seeds (hundreds of lines: seconds)
                ax.plot(*_joined(runs, "train_loss", col), color=color, lw=1.1, ls=NOISE_LINES[col][0])
            est = pd.concat(runs)
            est = est[est["b_simple_est"].notna()]
            shown = est[est["b_simple_est"] > 0]
            ax.scatter(shown["train_loss"], shown["b_simple_est"], color=color, s=12, alpha=0.7)
            marks.clip_marks(ax, est["train_loss"], est["b_simple_est"], y_limits, color)
        ax.set(xscale="log", yscale="log", xlabel=label("train_loss", rows), title=f"batch {b}")
        if x_limits:
            ax.set_xlim(x_limits[1], x_limits[0])  # the loss decreasing to the right
        else:
            ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylim(*y_limits)
    label_rows(axes, "noise scale (log)")
    handles, labels = style.handles(hue, pal, marker=None)
    handles += [Line2D([], [], color="0.3", ls=NOISE_LINES[c][0]) for c in columns[1:]]
    labels += [NOISE_LINES[c][1] for c in columns[1:]]
    handles.append(Line2D([], [], ls="", marker="o", color="0.3", ms=3))
    labels.append("B_simple, two-batch-size estimate")
    if data["diverged"].any():
        handles.append(Line2D([], [], ls="", marker="x", color="0.3", ms=6))
        labels.append("a run that diverged (its loss left the axis: ✕ on the top edge)")
    if (data["b_simple_est"] <= 0).any():
        handles.append(Line2D([], [], ls="", marker="v", color="0.3", ms=5))
        labels.append(f"estimate ≤ 0 ({int((data['b_simple_est'] <= 0).sum())}), ▼ on the bottom edge")
    style.legend(fig, handles, labels)
    return save(fig, stem, opts)


def tunability(curves: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """Median best objective after k trials, one panel per batch size, hue = optimizer; a k at which a
    draw more likely than not holds only failed trials is ✕ on the top edge."""
    if curves.empty:
        return None
    fig, axes, hue, pal, panels = _batch_panels(curves)
    limits = marks.log_limits(curves["median_best"])
    for ax, b, lines in panels:
        for _, color, c in lines:
            ok = c["median_best"].notna()
            marks.segments(ax, c["k"], c["median_best"], ok, color, ms=3)
            marks.failed(ax, c.loc[~ok, "k"], color, size=6)
        ax.set(xlabel="trials k", title=f"batch {b}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if limits and (curves["median_best"].dropna() > 0).all():
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if limits:
        axes.flat[0].set_ylim(*limits)
    label_rows(axes, f"median best {', '.join(curves['objective'].unique())}")
    handles, labels = style.handles(hue, pal)
    conv = marks.legend_entries({"failed": curves["median_best"].isna().any()})
    style.legend(fig, handles + [Line2D([], [], ls="", marker="x", color="0.2")] * bool(conv[0]),
                 labels + ["a draw of k likely holds only failed trials (✕ on the top edge)"] * bool(conv[0]))
    return save(fig, stem, opts)

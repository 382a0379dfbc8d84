"""Figures of the batch-size science: the critical-batch fit (Shallue et al. 2019 style), the
(B, η) vs (kB, kη) curves, the gradient noise scale against training loss, and tunability."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from suite.report.figures import style
from suite.report.figures.curves import LABELS, FigureOptions, individual, label_rows, panel_grid
from suite.report.figures.style import save
from suite.report.stats.batch_science import scaling_curve
from suite.report.tables.comparison import optimizer_order


def _fit_panel(ax, steps: dict[float, list[float]], caps: dict[float, float], fit: pd.Series, color,
               opts: FigureOptions) -> None:
    """One optimizer: seeds (or medians), censored batch sizes ▲ at their cap, the fit, perfect scaling."""
    sizes = np.array(sorted(steps), dtype=float)
    med = np.array([np.median(np.asarray(steps[b], float)) for b in sizes])
    ok = np.isfinite(med)
    if individual(max(len(v) for v in steps.values()), opts):
        for b in sizes:
            s = np.asarray(steps[b], float)
            ax.scatter(np.full(np.isfinite(s).sum(), b), s[np.isfinite(s)], color=color, s=12, alpha=0.7)
    ax.plot(sizes[ok], med[ok], ls="", marker="o", mfc="white", mec=color, ms=6)
    cens = sizes[~ok]
    ax.scatter(cens, [caps.get(b, math.nan) for b in cens], marker="^", facecolors="none", edgecolors=color, s=70)
    if not math.isnan(fit["b_crit"]):
        grid = np.geomspace(sizes.min(), sizes.max(), 100)
        ax.plot(grid, scaling_curve(grid, fit["s_min"], fit["b_crit"]), color=color, lw=1.5)
    if ok.any():
        b0, s0 = sizes[ok][0], med[ok][0]
        ax.plot(sizes[sizes >= b0], s0 * b0 / sizes[sizes >= b0], ls="--", color="0.5", lw=1)


def batch_scaling(steps: dict[str, dict[float, list[float]]], caps: dict[str, dict[float, float]],
                  fits: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """Steps-to-target vs batch size per optimizer (log-log) with the fitted S(B)."""
    names = [n for n in optimizer_order(steps) if steps[n]]
    if not names:
        return None
    pal, fit = style.palette(names), fits.set_index("optimizer")
    fig, axes = panel_grid(len(names), sharey=True)
    for ax, name in zip(axes.flat, names):
        _fit_panel(ax, steps[name], caps.get(name, {}), fit.loc[name], pal[name], opts)
        f = fit.loc[name]
        title = name if math.isnan(f["b_crit"]) else f"{name}: B_crit ≈ {f['b_crit']:.3g}"
        ax.set(xscale="log", yscale="log", xlabel="batch size (log)", title=title)
        ax.grid(alpha=0.3)
    label_rows(axes, "steps to target (log)")
    handles = [Line2D([], [], color="0.3", lw=1.5), Line2D([], [], ls="", marker="o", mfc="white", mec="0.3"),
               Line2D([], [], ls="--", color="0.5"), Line2D([], [], ls="", marker="^", mfc="none", mec="0.3")]
    labels = ["fit S_min·(1 + B_crit/B)", "median over seeds", "perfect scaling from the smallest uncensored batch",
              "censored median (▲ at the cap)"]
    if individual(max(len(v) for o in names for v in steps[o].values()), opts):
        handles.insert(2, Line2D([], [], ls="", marker="o", color="0.3", ms=3))
        labels.insert(2, "one seed")
    style.legend(fig, handles, labels, title=None)
    return save(fig, stem, opts)


def lr_scaling_curves(rows: pd.DataFrame, metric: str, stem: Path, opts: FigureOptions) -> Path | None:
    """``purpose=lr_scaling`` runs: ``metric`` vs epochs per (B, η); a scaling rule holds where the
    curves of (B, η) and (kB, kη) coincide."""
    data = rows[(rows["epoch"] > 0) & (rows[metric] > 0)]
    names = optimizer_order(data["optimizer"])
    if not names:
        return None
    fig, axes = panel_grid(len(names), sharey=True, size=(4.0, 3.0))
    handles, labels = [], []
    for ax, name in zip(axes.flat, names):
        mine = data[data["optimizer"] == name]
        configs = mine[["batch_size", "lr"]].drop_duplicates().sort_values("batch_size")
        shades = sns.color_palette("viridis", len(configs))
        for color, (b, lr) in zip(shades, configs.itertuples(index=False)):
            curve = mine[(mine["batch_size"] == b) & (mine["lr"] == lr)].groupby("step")[["epoch", metric]].mean()
            ax.plot(curve["epoch"], curve[metric], color=color, lw=1.4, marker="o", ms=2.5)
            handles.append(Line2D([], [], color=color))
            labels.append(f"{name}: B={b}, η={lr:.3g} (η/B={lr / b:.3g})")
        ax.set(xscale="log", yscale="log", xlabel="epochs", title=name)
        ax.grid(alpha=0.3)
    label_rows(axes, LABELS.get(metric, metric))
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


def noise_scale(noise: pd.DataFrame, stem: Path, opts: FigureOptions) -> Path | None:
    """B_simple vs training loss (log-log, loss decreasing to the right), one panel per batch size:
    the exact value as lines, the two-batch estimate as points."""
    data = noise[noise["train_loss"] > 0]
    if data.empty:
        return None
    fig, axes, hue, pal, panels = _batch_panels(data)
    for ax, b, lines in panels:
        for _, color, mine in lines:
            for _, run in mine.groupby("seed"):
                exact, est = run[run["b_simple_exact"] > 0], run[run["b_simple_est"] > 0]
                ax.plot(exact["train_loss"], exact["b_simple_exact"], color=color, lw=1.2)
                ax.scatter(est["train_loss"], est["b_simple_est"], color=color, s=12, alpha=0.7)
        ax.set(xscale="log", yscale="log", xlabel=LABELS["train_loss"], title=f"batch {b}")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    label_rows(axes, "B_simple = tr(Σ)/|G|² (log)")
    handles, labels = style.handles(hue, pal, marker=None)
    handles += [Line2D([], [], color="0.3"), Line2D([], [], ls="", marker="o", color="0.3", ms=3)]
    style.legend(fig, handles, labels + ["exact (per-example gradients)", "two-batch-size estimate"])
    return save(fig, stem, opts)


def tunability(curves: pd.DataFrame, metric: str, stem: Path, opts: FigureOptions) -> Path | None:
    """Expected best ``metric`` after k trials, one panel per batch size, hue = optimizer."""
    if curves.empty:
        return None
    fig, axes, hue, pal, panels = _batch_panels(curves)
    for ax, b, lines in panels:
        for _, color, c in lines:
            ax.plot(c["k"], c["expected_best"], color=color, marker="o", ms=3, lw=1.3)
        ax.set(xlabel="trials k", title=f"batch {b}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if (curves["expected_best"] > 0).all():
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    label_rows(axes, f"expected best final {LABELS.get(metric, metric)}")
    style.legend(fig, *style.handles(hue, pal))
    return save(fig, stem, opts)

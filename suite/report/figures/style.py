"""Figure plumbing shared by the report's figures: the Agg backend, options, colours, legends,
log-axis labels, saving (PNG by default; PDF, SVG as asked) and closing. :mod:`suite.report.figures.curves` draws with it.

Colours come in families, declared once per registry entry (``OptimizerSpec.family``): the SGD
family in blues, the adaptive methods in oranges/reds, Adam's relatives in greens, the newer
methods in purples, quasi-Newton in greys, a user's own optimizers in pinks. Within a family,
members get evenly spaced shades, so 18 optimizers read as 6 groups rather than 18 unrelated
colours; legends list the optimizers grouped under their family's name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from suite.optim.registry import FAMILIES, OPTIMIZERS  # noqa: E402

FAMILY_COLORMAPS = {"sgd": "Blues", "adaptive": "OrRd", "adam_variant": "Greens", "modern": "Purples",
                    "quasi_newton": "Greys", "external": "PuRd"}
FAMILY_TITLES = {"sgd": "SGD family", "adaptive": "adaptive", "adam_variant": "Adam variants",
                 "modern": "newer methods", "quasi_newton": "quasi-Newton", "external": "your optimizers"}


@dataclass(frozen=True)
class FigureOptions:
    formats: tuple[str, ...] = ("png",)
    dpi: int = 150
    renderer: Any = field(default=None, compare=False)  # a figures.render.Renderer: written by worker processes
    n_boot: int = 1000
    seed: int = 0
    ema: float = 0.9  # mini-batch loss EMA: weight per training step (half-life ln 0.5 / ln 0.9 ≈ 6.6 steps)


def family(name: str) -> str:
    """The colour family of an optimizer; names the registry does not know are a user's own."""
    spec = OPTIMIZERS.get(name)
    return spec.family if spec is not None and spec.family in FAMILY_COLORMAPS else "external"


def palette(names) -> dict[str, tuple]:
    """A colour per optimizer, fixed across figures: its family's colormap, one shade per member
    (registry order; names the registry does not know after them, alphabetically)."""
    everything = list(OPTIMIZERS) + sorted(set(names) - set(OPTIMIZERS))
    colors = {}
    for fam in FAMILIES:
        members = [n for n in everything if family(n) == fam]
        cmap = plt.get_cmap(FAMILY_COLORMAPS[fam])
        shades = [0.7] if len(members) == 1 else [0.4 + 0.55 * i / (len(members) - 1) for i in range(len(members))]
        colors.update({n: tuple(float(c) for c in cmap(s)[:3]) for n, s in zip(members, shades)})
    return colors


def save(fig, stem: Path, opts: FigureOptions) -> Path:
    """Write ``fig`` in every format of ``opts`` (by a worker process where ``opts.renderer`` has
    them: the files exist once the renderer has waited) and close it; return the first format's path."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    if opts.renderer is None or not opts.renderer.submit(fig, stem, opts.formats, opts.dpi):
        write_figure(fig, stem, opts.formats, opts.dpi)
    plt.close(fig)
    return stem.with_suffix(f".{opts.formats[0]}")


def write_figure(fig, stem: Path, formats, dpi: int) -> None:
    """Finish the axes (log tick labels, no minor ticks), lay out once, write every format."""
    for ax in fig.axes:
        for axis in ("x", "y"):
            log_ticks(ax, axis)
        ax.minorticks_off()  # minor log ticks cost ~40% of the drawing time and carry no labels
    fig.tight_layout()  # one layout pass; legends sit outside the axes and bbox "tight" keeps them
    for ext in formats:
        fig.savefig(stem.with_suffix(f".{ext}"), dpi=dpi, bbox_inches="tight")


def grid(n: int, max_cols: int = 4, size=(3.3, 2.7)):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def legend(fig, handles, labels, title="optimizer") -> None:
    """One legend for the whole figure, outside the axes (right), so it never covers data; family
    headings (from :func:`handles`) in bold."""
    leg = fig.legend(handles, labels, title=title, loc="upper left", bbox_to_anchor=(1.0, 0.92), frameon=False)
    for text in leg.get_texts():
        if text.get_text() in FAMILY_TITLES.values():
            text.set_fontweight("bold")


def handles(names, pal, marker: str | None = "o"):
    """Legend entries for optimizers ``names``; under a heading per family when they span several."""
    names = list(names)
    if len({family(n) for n in names}) < 2:
        return [Line2D([], [], color=pal[n], marker=marker, lw=1.5) for n in names], names
    out, labels = [], []
    for fam in FAMILIES:
        members = [n for n in names if family(n) == fam]
        if members:
            out.append(Line2D([], [], ls="none"))
            labels.append(FAMILY_TITLES[fam])
            out += [Line2D([], [], color=pal[n], marker=marker, lw=1.5) for n in members]
            labels += members
    return out, labels


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def power_of_ten(value: float, _pos=None) -> str:
    """``10⁻³`` as plain Unicode: the default mathtext labels cost a parser run per label."""
    exponent = math.log10(value) if value > 0 else math.nan
    if not math.isfinite(exponent) or abs(exponent - round(exponent)) > 1e-9:
        return f"{value:.3g}"
    return "10" + str(int(round(exponent))).translate(SUPERSCRIPT)


def log_ticks(ax, axis: str = "y") -> None:
    """Label a log axis readably. Under two decades it may hold no power of 10 at all (and minor
    labels like ``2×10⁻¹`` collide with titles), so it gets 1-2-5 ticks as plain numbers; wider
    spans get powers of 10. Fixed ticks (batch sizes) are left alone."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    if target.get_scale() != "log" or isinstance(target.get_major_locator(), FixedLocator):
        return
    lo, hi = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    if lo > 0 and hi / lo < 100:
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    else:
        target.set_major_formatter(FuncFormatter(power_of_ten))
    target.set_minor_formatter(NullFormatter())


def dodge(sizes: pd.Series, i: int, k: int, width: float = 0.08) -> pd.Series:
    """Shift optimizer i of k sideways on a log axis so equal values do not hide each other."""
    return sizes * (1 + width) ** (i - (k - 1) / 2)


def batch_axis(ax, sizes) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(sizes))
    ax.set_xticklabels([str(int(s)) for s in sorted(sizes)])
    ax.set_xlabel("batch size (log)")

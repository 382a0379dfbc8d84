"""How every figure draws what is not a plain measurement, so one convention holds throughout:

- a **censored** value (a median steps to target that fewer than half of the seeds reached
  within the cap) is a lower bound: an open ▲ at the bound with an arrow up, never joined by a line;
- a **failed** one (most seeds diverged: it would never have reached it) is a ✕ on the top edge of
  the panel, never drawn "at the cap";
- lines join only consecutive exact values, so no line passes through a censored or failed point;
- a log axis is limited to the values of what finished (:func:`log_limits`); what lies beyond (a
  diverged run's loss) is clipped at the edge and marked there, not allowed to stretch the axis.
"""
from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D

EDGE = 0.96  # axes fraction of the top edge marks


def censored(ax, x, y, color, size: float = 8) -> None:
    """Open ▲ at each lower bound, with an arrow up (the value lies above)."""
    for xi, yi in zip(np.asarray(x, float), np.asarray(y, float)):
        ax.plot([xi], [yi], ls="", marker="^", mfc="white", mec=color, ms=size, mew=1.3, zorder=4)
        ax.annotate("", xy=(xi, yi), xytext=(0, 16), textcoords="offset points", zorder=4,
                    arrowprops=dict(arrowstyle="<|-", color=color, lw=1.0, shrinkA=0, shrinkB=size * 0.6))


def failed(ax, x, color, size: float = 8) -> None:
    """✕ on the top edge at each x."""
    x = np.asarray(x, float)
    if len(x):
        ax.plot(x, np.full(len(x), EDGE), ls="", marker="x", color=color, ms=size, mew=1.6,
                transform=ax.get_xaxis_transform(), zorder=4)


def segments(ax, x, y, exact, color, **kw) -> None:
    """Lines through runs of consecutive exact values only; markers for every exact value."""
    x, y, exact = np.asarray(x, float), np.asarray(y, float), np.asarray(exact, bool)
    start = 0
    for end in [*np.flatnonzero(~exact), len(x)]:
        if end - start >= 1:
            ax.plot(x[start:end], y[start:end], color=color, **{"marker": "o", "ms": 4.5, "lw": 1.3, **kw})
        start = end + 1


def log_limits(values, pad: float = 1.25) -> tuple[float, float] | None:
    """(lo, hi) of the positive finite ``values`` with a margin on a log axis; None if there are none."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        return None
    lo, hi = float(v.min()), float(v.max())
    return (lo / pad, hi * pad) if hi > lo else (lo / 2, hi * 2)


def clip_marks(ax, x, y, limits: tuple[float, float], color) -> int:
    """Mark the points beyond ``limits`` (on y) at the edge they passed (▼ below, ✕ above); return
    how many there were."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    above, below = ~(y <= limits[1]), y < limits[0]  # NaN/inf losses count as above
    ax.plot(x[above], np.full(above.sum(), EDGE), ls="", marker="x", color=color, ms=6, mew=1.4,
            transform=ax.get_xaxis_transform(), zorder=4)
    ax.plot(x[below], np.full(below.sum(), 1 - EDGE), ls="", marker="v", color=color, ms=5,
            transform=ax.get_xaxis_transform(), zorder=4)
    return int(above.sum() + below.sum())


def legend_entries(shown: dict[str, bool]) -> tuple[list, list[str]]:
    """Legend handles for the conventions a figure used (keys of :data:`ENTRIES`)."""
    keys = [k for k, v in shown.items() if v]
    return [ENTRIES[k][0] for k in keys], [ENTRIES[k][1] for k in keys]


ENTRIES = {
    "censored": (Line2D([], [], ls="", marker="^", mfc="white", mec="0.2", ms=8),
                 "censored: fewer than half of the seeds reached it within the cap (▲ at the bound, value above)"),
    "failed": (Line2D([], [], ls="", marker="x", color="0.2", ms=8, mew=1.6),
               "failed: most seeds diverged (✕ on the top edge)"),
    "diverged": (Line2D([], [], ls="", marker="x", color="0.2", ms=6, mew=1.4),
                 "diverged (✕ on the top edge)"),
}

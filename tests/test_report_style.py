"""The report's colours for many optimizers: families declared once on the registry entries, a
hue per family, a shade per member, legends grouped by family. Registry-wide: a new entry is
checked here with no test edit (it must name a family the report knows)."""
from __future__ import annotations

import colorsys
import itertools

import pytest

from suite.optim.registry import FAMILIES, OPTIMIZERS
from suite.report.figures import style


def test_every_entry_names_a_family_with_colours_and_a_title():
    assert set(style.FAMILY_COLORMAPS) == set(FAMILIES) == set(style.FAMILY_TITLES)
    for name, spec in OPTIMIZERS.items():
        assert spec.family in FAMILIES and style.family(name) == spec.family, name
    assert style.family("someone_elses") == "external"


def test_colours_are_distinct_and_grouped_by_family():
    names = [*OPTIMIZERS, "someone_elses"]
    pal = style.palette(names)
    fixed = style.palette(["sgd"])  # fixed per optimizer, whatever a figure shows
    assert set(pal) >= set(names) and all(pal[n] == fixed[n] for n in OPTIMIZERS)
    for a, b in itertools.combinations(names, 2):
        assert sum((x - y) ** 2 for x, y in zip(pal[a], pal[b])) ** 0.5 > 0.05, (a, b)
    hues = {n: colorsys.rgb_to_hsv(*pal[n]) for n in names}
    for fam in FAMILIES:
        members = [n for n in names if style.family(n) == fam]
        if len(members) < 2 or fam == "quasi_newton":  # greys have no hue
            continue
        spread = max(hues[a][0] for a in members) - min(hues[a][0] for a in members)
        assert spread < 0.12, f"family {fam} spans hues {[round(hues[m][0], 2) for m in members]}"


def test_legends_group_optimizers_under_their_family(tmp_path):
    names = ["sgd", "adam", "nesterov", "lion", "someone_elses"]
    handles, labels = style.handles(names, style.palette(names))
    assert labels == ["SGD family", "sgd", "nesterov", "adaptive", "adam", "newer methods", "lion",
                      "your optimizers", "someone_elses"]
    assert len(handles) == len(labels)
    assert style.handles(["sgd", "momentum"], style.palette([]))[1] == ["sgd", "momentum"]  # one family: no headings
    fig, ax = style.plt.subplots()
    everything = list(OPTIMIZERS)
    style.legend(fig, *style.handles(everything, style.palette(everything)))
    bold = [t.get_text() for t in fig.legends[0].get_texts() if t.get_fontweight() == "bold"]
    assert bold == [style.FAMILY_TITLES[f] for f in FAMILIES if any(style.family(n) == f for n in everything)]
    assert style.save(fig, tmp_path / "legend", style.FigureOptions(formats=("png",))).is_file()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_entry_has_its_own_colour(name):
    pal = style.palette(OPTIMIZERS)
    assert list(pal.values()).count(pal[name]) == 1

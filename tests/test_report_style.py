"""The report's colours for many optimizers: families declared once on the registry entries, a
hue per family, a shade per member, legends grouped by family. Registry-wide: a new entry is
checked here with no test edit (it must name a family the report knows)."""
from __future__ import annotations

import colorsys
import itertools

import pytest

from suite.optim.registry import FAMILIES, OPTIMIZERS
from suite.report import style as S


def test_every_entry_names_a_family_with_colours_and_a_title():
    assert set(S.FAMILY_COLORMAPS) == set(FAMILIES) == set(S.FAMILY_TITLES)
    for name, spec in OPTIMIZERS.items():
        assert spec.family in FAMILIES and S.family(name) == spec.family, name
    assert S.family("someone_elses") == "external"


def test_colours_are_distinct_and_grouped_by_family():
    names = [*OPTIMIZERS, "someone_elses"]
    pal = S.palette(names)
    fixed = S.palette(["sgd"])  # fixed per optimizer, whatever a figure shows
    assert set(pal) >= set(names) and all(pal[n] == fixed[n] for n in OPTIMIZERS)
    for a, b in itertools.combinations(names, 2):
        assert sum((x - y) ** 2 for x, y in zip(pal[a], pal[b])) ** 0.5 > 0.05, (a, b)
    hues = {n: colorsys.rgb_to_hsv(*pal[n]) for n in names}
    for fam in FAMILIES:
        members = [n for n in names if S.family(n) == fam]
        if len(members) < 2 or fam == "quasi_newton":  # greys have no hue
            continue
        spread = max(hues[a][0] for a in members) - min(hues[a][0] for a in members)
        assert spread < 0.12, f"family {fam} spans hues {[round(hues[m][0], 2) for m in members]}"


def test_legends_group_optimizers_under_their_family(tmp_path):
    names = ["sgd", "adam", "nesterov", "lion", "someone_elses"]
    handles, labels = S.handles(names, S.palette(names))
    assert labels == ["SGD family", "sgd", "nesterov", "adaptive", "adam", "newer methods", "lion",
                      "your optimizers", "someone_elses"]
    assert len(handles) == len(labels)
    assert S.handles(["sgd", "momentum"], S.palette([]))[1] == ["sgd", "momentum"]  # one family: no headings
    fig, ax = S.plt.subplots()
    everything = list(OPTIMIZERS)
    S.legend(fig, *S.handles(everything, S.palette(everything)))
    bold = [t.get_text() for t in fig.legends[0].get_texts() if t.get_fontweight() == "bold"]
    assert bold == [S.FAMILY_TITLES[f] for f in FAMILIES if any(S.family(n) == f for n in everything)]
    assert S.save(fig, tmp_path / "legend", S.FigureOptions(formats=("png",))).is_file()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_entry_has_its_own_colour(name):
    pal = S.palette(OPTIMIZERS)
    assert list(pal.values()).count(pal[name]) == 1
